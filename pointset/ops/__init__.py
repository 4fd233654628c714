"""Point-set operators with pluggable backends (see ``pointset.ops._backend``)."""

from ._backend import (
    BACKENDS,
    CPU_ONLY,
    BackendUnavailableError,
    available_backends,
    backend_version,
    is_available,
    unavailable_reason,
    use_backend,
)
from ._clouds import Clouds
from .ball_query import ball_query
from .fps import fps, fps_dense
from .kmeans import KMeansResult, kmeans
from .knn import knn, knn_dense, knn_graph
from .nearest import nearest
from .radius import radius, radius_graph
from .voxel_grid import VoxelDownsample, voxel_downsample, voxel_grid

__all__ = [
    "Clouds",
    "BACKENDS",
    "CPU_ONLY",
    "BackendUnavailableError",
    "available_backends",
    "backend_version",
    "is_available",
    "unavailable_reason",
    "use_backend",
    "fps",
    "fps_dense",
    "knn",
    "knn_dense",
    "knn_graph",
    "ball_query",
    "kmeans",
    "KMeansResult",
    "nearest",
    "radius",
    "radius_graph",
    "voxel_grid",
    "voxel_downsample",
    "VoxelDownsample",
]

from .balanced_cluster import (  # noqa: E402
    BalancedClusters,
    DenseBalancedClusters,
    balanced_cluster,
    balanced_cluster_dense,
)

__all__ += [
    "BalancedClusters",
    "DenseBalancedClusters",
    "balanced_cluster",
    "balanced_cluster_dense",
]

from .cluster_neighbourhood import (  # noqa: E402
    Neighbourhood,
    cluster_neighbourhood,
    knn_lowest_index,
    nearest_clusters,
)

__all__ += ["Neighbourhood", "cluster_neighbourhood", "knn_lowest_index", "nearest_clusters"]
from . import prechecked, torch_cluster_compat  # noqa: E402
from .pyg_patch import is_pyg_patched, patch_pyg, pyg_on_pointset, unpatch_pyg  # noqa: E402

__all__ += [
    "prechecked",
    "torch_cluster_compat",
    "patch_pyg",
    "unpatch_pyg",
    "pyg_on_pointset",
    "is_pyg_patched",
]
