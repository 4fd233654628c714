"""The operators without input checks, for callers that have checked their inputs once.

Every function here has the signature and the result of the operator of the same name in
:mod:`pointset.ops`; each public operator is its input checks followed by the function here.
A layer that validates ``pos`` and ``batch`` on entry and then calls several operators on
them (FPS, then kNN, then nearest) calls these, so the same tensors are not scanned again.

The caller's obligations (breaking one gives wrong results or an obscure error, never a
``ValueError`` naming the problem):

* point tensors (``x``, ``y``, ``pos``) are floating ``[N, D]`` tensors (``[B, N, D]`` for
  the padded ``balanced_cluster_dense`` and ``cluster_neighbourhood``) with ``N >= 1`` and
  ``D >= 1``, all values finite (no NaN or inf);
* tensors passed together share one device, one dtype and one ``D``;
* a batch vector is a 1-D integer tensor on the points' device with one entry per point,
  non-negative and sorted in non-decreasing order (as PyG's ``DataLoader`` makes it), or
  ``None`` for one cloud.

Scalar arguments (``k``, ``r``, ``ratio``, ``num``, ``max_num_neighbors``, ``flow``,
``backend``) are still checked: that costs nothing per point.

Example::

    >>> import torch
    >>> from pointset.ops import prechecked
    >>> pos = torch.rand(100, 3)
    >>> idx = prechecked.fps(pos, num=10)
    >>> prechecked.knn(pos, pos[idx], 4).shape
    torch.Size([2, 40])
"""

from .balanced_cluster import balanced_cluster_dense_prechecked as balanced_cluster_dense
from .ball_query import ball_query_prechecked as ball_query
from .cluster_neighbourhood import cluster_neighbourhood_prechecked as cluster_neighbourhood
from .fps import fps_prechecked as fps
from .knn import knn_graph_prechecked as knn_graph
from .knn import knn_prechecked as knn
from .nearest import nearest_prechecked as nearest
from .radius import radius_graph_prechecked as radius_graph
from .radius import radius_prechecked as radius
from .voxel_grid import voxel_downsample_prechecked as voxel_downsample
from .voxel_grid import voxel_grid_prechecked as voxel_grid

__all__ = [
    "balanced_cluster_dense",
    "ball_query",
    "cluster_neighbourhood",
    "fps",
    "knn",
    "knn_graph",
    "nearest",
    "radius",
    "radius_graph",
    "voxel_downsample",
    "voxel_grid",
]
