"""A kMaX-DeepLab mask-transformer segmenter on point sets (``pointmlp_kmax_seg``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pointset.models.kmax_loss import KMaXLoss
from pointset.models.pointmlp_seg import PointMLPSegBackbone
from pointset.models.registry import register_model
from pointset.nn import KMaXDecoderLayer, KMaXPredictor

__all__ = ["KMaXSeg", "KMAX_SEG_CONFIG", "pointmlp_kmax_seg"]

#: kMaX decoder options of ``pointmlp_kmax_seg`` (widths scaled down from the official
#: 256-channel centers / 2048 FFN for CPU training; the backbone keeps its defaults).
KMAX_SEG_CONFIG: dict[str, Any] = dict(
    in_channels=6,
    num_queries=32,
    query_dim=128,
    base_filters=64,
    num_heads=4,
    pixel_head_dim=128,
    mask_dim=64,
    ffn_dim=512,
    num_scales=3,
    layers_per_scale=2,
    drop_path_prob=0.0,
)


def _proj(in_channels: int, out_channels: int) -> nn.Sequential:
    """``Conv1d(1x1, no bias) -> BatchNorm(eps 1e-3, momentum 0.01) -> GELU`` on ``[B, C, L]``."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01),
        nn.GELU(),
    )


def _pack(feat: Tensor) -> tuple[Tensor, Tensor]:
    """``feat [B, D, N]`` -> packed ``x [B * N, D]`` and ``batch [B * N]``."""
    b, d, n = feat.shape
    batch = torch.arange(b, device=feat.device).repeat_interleave(n)
    return feat.transpose(1, 2).reshape(b * n, d), batch


class KMaXSeg(nn.Module):
    r"""Semantic segmentation of point sets with kMaX-DeepLab's k-means mask transformer
    (`"kMaX-DeepLab: k-means Mask Transformer" <https://arxiv.org/abs/2207.04044>`_).

    A point backbone (by default :class:`~pointset.models.pointmlp_seg.PointMLPSegBackbone`)
    returns decoder features coarse to fine, the last one at every input point. ``L``
    learned cluster centers (``_cluster_centers``, an ``Embedding(query_dim, L)`` with
    truncated-normal init, as the official decoder) go through ``layers_per_scale``
    :class:`~pointset.nn.KMaXDecoderLayer` calls on each of the ``num_scales`` coarsest
    decoder levels, coarse to fine (kMaX's schedule: two per scale at OS32/16/8; here the
    point levels ``N/64, N/16, N/4`` of the default backbone). Each layer runs on the packed
    points of its level; on 3-D points its depthwise 5x5 conv reads only the center tap.
    Then, as the official decoder, class and mask embeddings of the centers
    (``_class_embedding_projection``, ``_mask_embedding_projection``: 1x1 conv + BN + GELU)
    feed a final :class:`~pointset.nn.KMaXPredictor` on the full-resolution features.

    Per-point semantic scores combine the two heads as kMaX's inference does: the softmax
    over clusters of each point's mask logits times each cluster's class softmax without
    void,

    .. math::
        s_{nk} = \sum_l \mathrm{softmax}_l(m_{nl})\ \mathrm{softmax}(c_l)_k ,
        \qquad \texttt{logits}_{nk} = \log \max(s_{nk}, 10^{-12}).

    An auxiliary per-point semantic head (``_auxiliary_semantic_predictor``) on the
    full-resolution features is trained with cross-entropy, as kMaX's auxiliary semantic
    branch. :meth:`loss` is :class:`~pointset.models.kmax_loss.KMaXLoss` (Hungarian matching,
    class CE, dice, per-point softmax over clusters, deep supervision, auxiliary CE).

    Args:
        num_classes (int): semantic classes ``K`` (the class heads have ``K + 1``, void last).
        in_channels (int): input channels, xyz first (default: 6, xyz + rgb).
        num_queries (int): cluster centers ``L`` (default: 32).
        query_dim (int): center width (official: 256; default: 128).
        base_filters, num_heads (int): decoder-layer width and heads (default: 64, 4).
        pixel_head_dim, mask_dim, ffn_dim (int): the official literals 256 / 128 / 2048
            (default: 128, 64, 512).
        num_scales (int): coarsest decoder levels that get k-means layers (default: 3).
        layers_per_scale (int): layers per level (default: 2; 6 layers in all).
        drop_path_prob (float): stochastic depth of the decoder layers (default: 0).
        bn_momentum (float, optional): momentum of every BatchNorm outside the backbone;
            ``None`` keeps the official 0.01 (TF 0.99), whose running statistics take
            hundreds of steps to settle, so short schedules evaluate with stale ones (the
            built-in scenes demo uses 0.1). (default: ``None``)
        backbone (nn.Module, optional): a backbone with ``decoder_channels`` whose forward
            returns ``.decoder`` as ``[(xyz [B, 3, N_l], feat [B, D_l, N_l]), ...]``.
        **backbone_kwargs: arguments of the default backbone.

    Shapes:
        - **input:** ``points [B, in_channels, N]``
        - **output:** dict with ``logits [B, N, K]`` (log semantic scores),
          ``class_logits [B, L, K + 1]``, ``mask_logits [B, N, L]``,
          ``semantic_logits [B, N, K]`` (auxiliary head) and ``aux``: one dict per decoder
          layer with ``class_logits [B, L, K + 1]``, ``mask_logits [B, N_l, L]`` and
          ``index [B, N_l]`` (each level point's index among the input points).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 6,
        num_queries: int = 32,
        query_dim: int = 128,
        base_filters: int = 64,
        num_heads: int = 4,
        pixel_head_dim: int = 128,
        mask_dim: int = 64,
        ffn_dim: int = 512,
        num_scales: int = 3,
        layers_per_scale: int = 2,
        drop_path_prob: float = 0.0,
        bn_momentum: float | None = None,
        backbone: nn.Module | None = None,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_queries < 1:
            raise ValueError(
                f"num_classes and num_queries must be >= 1, got {num_classes}, {num_queries}"
            )
        if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must lie in (0, 1], got {bn_momentum}")
        if backbone is None:
            backbone = PointMLPSegBackbone(in_channels=in_channels, **backbone_kwargs)
        elif backbone_kwargs:
            raise ValueError(
                f"backbone arguments {sorted(backbone_kwargs)} given with a backbone module"
            )
        levels = list(backbone.decoder_channels)
        if not 1 <= num_scales <= len(levels):
            raise ValueError(
                f"num_scales must be in [1, {len(levels)}] (decoder levels), got {num_scales}"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_queries = num_queries
        self.num_scales = num_scales
        self.layers_per_scale = layers_per_scale
        self.backbone = backbone
        self._cluster_centers = nn.Embedding(query_dim, num_queries)
        layer_args = dict(
            num_classes=num_classes + 1,
            query_channels=query_dim,
            base_filters=base_filters,
            num_heads=num_heads,
            drop_path_prob=drop_path_prob,
            pixel_head_dim=pixel_head_dim,
            embed_dim=mask_dim,
            ffn_dim=ffn_dim,
        )
        self._kmax_transformer_layers = nn.ModuleList(
            KMaXDecoderLayer(in_channels=levels[s], **layer_args)
            for s in range(num_scales)
            for _ in range(layers_per_scale)
        )
        self._class_embedding_projection = _proj(query_dim, query_dim)
        self._mask_embedding_projection = _proj(query_dim, query_dim)
        self._predictor = KMaXPredictor(
            levels[-1], query_dim, num_classes + 1, pixel_head_dim, mask_dim
        )
        self._auxiliary_semantic_predictor = nn.Sequential(
            *_proj(levels[-1], levels[-1]), nn.Conv1d(levels[-1], num_classes, 1)
        )
        self.criterion = KMaXLoss(num_classes)
        if bn_momentum is not None:
            norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)
            for name, module in self.named_modules():
                if isinstance(module, norms) and not name.startswith("backbone."):
                    module.momentum = bn_momentum
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if hasattr(self.backbone, "reset_parameters"):
            self.backbone.reset_parameters()
        for layer in self._kmax_transformer_layers:
            layer.reset_parameters()
        self._predictor.reset_parameters()
        heads = (
            self._class_embedding_projection,
            self._mask_embedding_projection,
            self._auxiliary_semantic_predictor,
        )
        for head in heads:
            for module in head:
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        nn.init.trunc_normal_(self._cluster_centers.weight, std=1.0, a=-2.0, b=2.0)

    def forward(self, points: Tensor) -> dict[str, Any]:
        """Segment ``points [B, in_channels, N]``; see the class docstring."""
        decoder = self.backbone(points).decoder
        full_xyz, full = decoder[-1]
        b = points.size(0)
        query = self._cluster_centers.weight.unsqueeze(0).expand(b, -1, -1).contiguous()
        aux = []
        layers = iter(self._kmax_transformer_layers)
        for xyz, feat in decoder[: self.num_scales]:
            x, batch = _pack(feat)
            with torch.no_grad():  # FPS levels are subsets of the input: exact 1-NN indices
                index = torch.cdist(xyz.transpose(1, 2), full_xyz.transpose(1, 2)).argmin(dim=2)
            for _ in range(self.layers_per_scale):
                query, pred = next(layers)(x, None, batch, query_feature=query)
                masks = pred["mask_logits"].view(b, feat.size(2), -1)
                aux.append(
                    {"class_logits": pred["class_logits"], "mask_logits": masks, "index": index}
                )
        x, batch = _pack(full)
        pred = self._predictor(
            x,
            None,
            batch,
            query=self._mask_embedding_projection(query),
            class_query=self._class_embedding_projection(query),
        )
        mask_logits = pred["mask_logits"].view(b, full.size(2), -1)
        class_prob = pred["class_logits"].softmax(dim=-1)[..., : self.num_classes]
        scores = torch.einsum("bnl,blk->bnk", mask_logits.softmax(dim=-1), class_prob)
        return {
            "logits": scores.clamp_min(1e-12).log(),
            "class_logits": pred["class_logits"],
            "mask_logits": mask_logits,
            "semantic_logits": self._auxiliary_semantic_predictor(full).transpose(1, 2),
            "aux": aux,
        }

    def loss(self, output: dict[str, Any], labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """kMaX losses of ``output`` against ``labels [B, N]`` (-1 = ignore); see
        :class:`~pointset.models.kmax_loss.KMaXLoss`."""
        return self.criterion(output, labels)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_classes={self.num_classes}, in_channels={self.in_channels}, "
            f"num_queries={self.num_queries}, layers={len(self._kmax_transformer_layers)})"
        )


@register_model(
    input="points",
    family="kmax",
    paper="kMaX-DeepLab: k-means Mask Transformer (Yu et al., ECCV 2022), https://arxiv.org/abs/2207.04044",
    config=KMAX_SEG_CONFIG,
    default_cfg=dict(
        task="segmentation",
        call="points",
        num_classes=13,
        input_size=(6, 2048),
        param_count=18_515_013,
    ),
)
def pointmlp_kmax_seg(num_classes: int = 13, **kwargs: Any) -> KMaXSeg:
    """PointMLP segmentation backbone + six kMaX decoder layers (no published numbers);
    ``kwargs`` override the kMaX options and pass backbone arguments through."""
    return KMaXSeg(num_classes=num_classes, **{**KMAX_SEG_CONFIG, **kwargs})
