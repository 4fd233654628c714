"""Clustering-based layers as PyG message-passing modules (CoC, AFF, PointMLP)."""

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

from .jbu_stack import JBUStack  # noqa: E402
from .joint_bilateral_upsample import JointBilateralUpsample  # noqa: E402

__all__ += ["JBUStack", "JointBilateralUpsample"]
