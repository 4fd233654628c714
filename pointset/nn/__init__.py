"""Clustering-based layers on PyG point sets (CoC, AFF, PointMLP).

``ContextCluster`` and ``ClusterAttention`` are ``torch_geometric.nn.MessagePassing``
layers; the others are ``torch.nn.Module``s built on :mod:`pointset.ops`.
:class:`ClusterPlan`, :func:`grid_plan` and :func:`point_plan` (from
:mod:`pointset.nn.cluster_plan`) build the centers and edges a ``ContextCluster`` runs on.
"""

from .adaptive_downsample import AdaptiveDownsample, Downsampled
from .cloud_group_norm import CloudGroupNorm
from .cluster_attention import ClusterAttention
from .cluster_plan import ClusterPlan, grid_plan, point_plan
from .context_cluster import ContextCluster
from .feature_propagation import FeaturePropagation
from .grid_point_reducer import GridPointReducer
from .group_context_cluster import GroupContextCluster
from .kmax_decoder_layer import KMaXDecoderLayer
from .kmax_predictor import KMaXPredictor
from .kmeans_cross_attention import KMeansCrossAttention, KMeansStep
from .local_grouper import LocalGrouper, PackedGroups
from .point_mlp_blocks import ConvBNReLU1D, ConvBNReLURes1D, PosExtraction, PreExtraction
from .point_reducer import PointReducer

__all__ = [
    "AdaptiveDownsample",
    "ClusterAttention",
    "ClusterPlan",
    "CloudGroupNorm",
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
    "grid_plan",
    "point_plan",
    "KMeansCrossAttention",
    "KMeansStep",
    "KMaXPredictor",
    "KMaXDecoderLayer",
]

from .jbu_stack import JBUStack  # noqa: E402
from .joint_bilateral_upsample import JointBilateralUpsample  # noqa: E402

__all__ += ["JBUStack", "JointBilateralUpsample"]
