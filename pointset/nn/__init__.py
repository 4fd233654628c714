"""Clustering-based layers on PyG point sets (CoC, AFF, PointMLP).

``ContextCluster`` and ``ClusterAttention`` are ``torch_geometric.nn.MessagePassing``
layers; the others are ``torch.nn.Module``s built on :mod:`pointset.ops`.
"""

from .adaptive_downsample import AdaptiveDownsample, Downsampled
from .cluster_attention import ClusterAttention
from .context_cluster import ContextCluster
from .group_context_cluster import GroupContextCluster
from .local_grouper import LocalGrouper, PackedGroups
from .point_mlp_blocks import ConvBNReLU1D, ConvBNReLURes1D, PosExtraction, PreExtraction
from .point_reducer import GridPointReducer, PointReducer

__all__ = [
    "AdaptiveDownsample",
    "ClusterAttention",
    "ContextCluster",
    "ConvBNReLU1D",
    "ConvBNReLURes1D",
    "Downsampled",
    "GridPointReducer",
    "GroupContextCluster",
    "LocalGrouper",
    "PackedGroups",
    "PointReducer",
    "PosExtraction",
    "PreExtraction",
]
