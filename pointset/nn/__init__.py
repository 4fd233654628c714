"""Clustering-based layers as PyG message-passing modules (CoC, AFF, PointMLP)."""

from .adaptive_downsample import AdaptiveDownsample, Downsampled
from .cluster_attention import ClusterAttention
from .context_cluster import ContextCluster
from .feature_propagation import FeaturePropagation, interpolate_dense, interpolate_packed
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
    "FeaturePropagation",
    "GridPointReducer",
    "GroupContextCluster",
    "LocalGrouper",
    "PackedGroups",
    "PointReducer",
    "PosExtraction",
    "PreExtraction",
    "interpolate_dense",
    "interpolate_packed",
]
