"""PointMLP point segmentation: the shared encoder/decoder backbone, the official
ShapeNetPart part-segmentation network and a per-point baseline segmenter.

:class:`PointMLPSegBackbone` is the official part-segmentation network without its
category token, global context and classifier. :class:`PointMLPPartSeg` (registered as
``pointmlp_partseg``) adds those on top of the same modules, so its state-dict keys are
the official ones; :class:`PointMLPSeg` (``pointmlp_seg``) puts a per-point head on the
backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset.models.pointmlp import build_encoder
from pointset.models.registry import Reported, register_model
from pointset.nn import ConvBNReLU1D, FeaturePropagation

#: Constructor arguments of the published ShapeNetPart model (``num_classes`` excluded).
PARTSEG_CONFIG: dict[str, Any] = dict(
    points=2048,
    embed_dim=64,
    groups=1,
    res_expansion=1.0,
    activation="relu",
    bias=True,
    use_xyz=True,
    normalize="anchor",
    dim_expansion=[2, 2, 2, 2],
    pre_blocks=[2, 2, 2, 2],
    pos_blocks=[2, 2, 2, 2],
    k_neighbors=[32, 32, 32, 32],
    reducers=[4, 4, 4, 4],
    de_dims=[512, 256, 128, 128],
    de_blocks=[4, 4, 4, 4],
    gmp_dim=64,
    cls_dim=64,
)

#: The backbone part of :data:`PARTSEG_CONFIG`.
BACKBONE_CONFIG: dict[str, Any] = {
    k: v for k, v in PARTSEG_CONFIG.items() if k not in ("gmp_dim", "cls_dim")
}


class SegFeatures(NamedTuple):
    """Multi-scale output of :class:`PointMLPSegBackbone`.

    Attributes:
        encoder: ``(xyz [B, 3, N_s], feat [B, C_s, N_s])`` per level, fine to coarse: the
            embedded input (``N_0 = N``), then one entry per stage.
        decoder: ``(xyz [B, 3, N_l], feat [B, D_l, N_l])`` per decoder step, coarse to
            fine; the last entry is at the full resolution ``N``.
    """

    encoder: list[tuple[Tensor, Tensor]]
    decoder: list[tuple[Tensor, Tensor]]


def _dense(seq: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``seq`` on channel-first ``x [B, C, N]``: pointset layers through their
    ``forward_dense`` (the official layout), torch modules as they are."""
    for module in seq:
        x = module.forward_dense(x) if isinstance(module, ConvBNReLU1D) else module(x)
    return x


def _reset(module: nn.Module) -> None:
    """Re-initialise every submodule that can, walking into plain containers."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            _reset(child)


class PointMLPSegBackbone(nn.Module):
    r"""PointMLP's part-segmentation encoder/decoder as a dense point-feature backbone.

    From `"Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP
    Framework" <https://arxiv.org/abs/2202.07123>`_ (ICLR 2022), part segmentation.

    A pointwise :class:`~pointset.nn.ConvBNReLU1D` embedding of all input channels is
    followed by ``len(pre_blocks)`` encoder stages of :class:`~pointset.nn.LocalGrouper`
    (``points // reducer`` anchors by FPS, kNN groups, geometric affine normalisation),
    :class:`~pointset.nn.PreExtraction` and :class:`~pointset.nn.PosExtraction`. The
    decoder then walks back with one :class:`~pointset.nn.FeaturePropagation` per stage:
    3-NN inverse squared distance interpolation of the coarser level, concatenation with
    the skip features of the finer level, fusion and residual blocks. With encoder widths
    :math:`e_0 = E, e_s = e_{s-1} d_s` and ``de_dims`` :math:`(g_1, \ldots, g_S)`, decoder
    step :math:`i` maps :math:`g_{i-1} + e_{S-i}` channels to :math:`g_i`
    (:math:`g_0 = e_S`).

    Submodule names are the official ones (``embedding``, ``local_grouper_list``,
    ``pre_blocks_list``, ``pos_blocks_list``, ``decode_list``).

    Input layout: ``points [B, in_channels, N]`` with the **first three channels the xyz
    coordinates**; all channels feed the embedding, only xyz drives sampling, grouping and
    interpolation. Anchor counts follow ``points`` (not ``N``), so ``N`` must be at least
    ``points // reducers[0]`` and every stage needs ``k`` neighbours.

    Args:
        in_channels (int): Input channels, at least 3 (xyz first). (default: ``6``, xyz +
            normals as in the official model)
        points (int): Nominal input size that sets the anchor counts. (default: ``2048``)
        embed_dim (int): Embedding channels. (default: ``64``)
        groups (int): Convolution groups in the residual blocks. (default: ``1``)
        res_expansion (float): Hidden width factor of the residual blocks. (default: ``1.0``)
        activation (str): Activation name. (default: ``"relu"``)
        bias (bool): Convolution biases. (default: ``True``)
        use_xyz (bool): Append xyz to grouped features. (default: ``True``)
        normalize (str or None): ``"anchor"``, ``"center"`` or ``None``. (default: ``"anchor"``)
        dim_expansion (list[int]): Channel factor per stage. (default: ``[2, 2, 2, 2]``)
        pre_blocks (list[int]): Residual blocks per PreExtraction. (default: ``[2] * 4``)
        pos_blocks (list[int]): Residual blocks per PosExtraction. (default: ``[2] * 4``)
        k_neighbors (list[int]): Group size per stage. (default: ``[32] * 4``)
        reducers (list[int]): Anchor reduction per stage. (default: ``[4] * 4``)
        de_dims (list[int]): Output channels of the decoder steps, coarse to fine.
            (default: ``[512, 256, 128, 128]``)
        de_blocks (list[int]): Residual blocks per decoder step. (default: ``[4] * 4``)

    Attributes:
        encoder_channels (list[int]): :math:`e_0, \ldots, e_S` (fine to coarse).
        decoder_channels (list[int]): :math:`g_1, \ldots, g_S` (coarse to fine).
        out_channels (int): channels of the full-resolution decoder output.

    Shapes:
        - **input:** :math:`(B, C_{in}, N)`
        - **output:** :class:`SegFeatures` with ``encoder[s]`` =
          :math:`((B, 3, N_s), (B, e_s, N_s))` and ``decoder[i]`` =
          :math:`((B, 3, N_{S-1-i}), (B, g_{i+1}, N_{S-1-i}))`, :math:`N_0 = N`
    """

    def __init__(
        self,
        in_channels: int = 6,
        points: int = 2048,
        embed_dim: int = 64,
        groups: int = 1,
        res_expansion: float = 1.0,
        activation: str = "relu",
        bias: bool = True,
        use_xyz: bool = True,
        normalize: str | None = "anchor",
        dim_expansion: Sequence[int] = (2, 2, 2, 2),
        pre_blocks: Sequence[int] = (2, 2, 2, 2),
        pos_blocks: Sequence[int] = (2, 2, 2, 2),
        k_neighbors: Sequence[int] = (32, 32, 32, 32),
        reducers: Sequence[int] = (4, 4, 4, 4),
        de_dims: Sequence[int] = (512, 256, 128, 128),
        de_blocks: Sequence[int] = (4, 4, 4, 4),
    ) -> None:
        super().__init__()
        self.points = points
        self.encoder_channels = build_encoder(
            self, in_channels, points, embed_dim, groups, res_expansion, activation, bias,
            use_xyz, normalize, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
            de_dims=de_dims, de_blocks=de_blocks,
        )  # fmt: skip

        self.decoder_channels = [int(d) for d in de_dims]
        self.decode_list = nn.ModuleList()
        coarse = self.encoder_channels[-1]
        for i in range(self.stages):
            skip = self.encoder_channels[-2 - i]
            self.decode_list.append(
                FeaturePropagation(
                    coarse + skip,
                    self.decoder_channels[i],
                    de_blocks[i],
                    groups=groups,
                    res_expansion=res_expansion,
                    bias=bias,
                    activation=activation,
                )
            )
            coarse = self.decoder_channels[i]
        self.out_channels = coarse

    def reset_parameters(self) -> None:
        """Re-initialise every layer (PyTorch defaults, identity affine, alpha 1, beta 0)."""
        _reset(self)

    def check_points(self, points: Tensor, name: str = "points") -> None:
        """``points`` must be a non-empty ``[B, in_channels, N]`` floating tensor."""
        if not isinstance(points, Tensor) or points.dim() != 3:
            shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
            raise ValueError(f"{name} must have shape [B, {self.in_channels}, N], got {shape}")
        if points.size(1) != self.in_channels:
            raise ValueError(
                f"{name} must have {self.in_channels} channels (xyz first), got "
                f"{points.size(1)} (input layout is [B, C, N])"
            )
        if points.size(0) == 0 or points.size(2) == 0:
            raise ValueError(f"{name} is empty (shape {tuple(points.shape)})")
        if not points.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {points.dtype}")

    def forward_features(self, points: Tensor) -> SegFeatures:
        """Encoder and decoder features of ``points [B, in_channels, N]``."""
        self.check_points(points)
        xyz = points[:, :3].transpose(1, 2)  # [B, N, 3]
        x = self.embedding.forward_dense(points)  # [B, E, N]
        levels = [(xyz, x)]
        for grouper, pre, pos in zip(
            self.local_grouper_list, self.pre_blocks_list, self.pos_blocks_list
        ):
            # grouper + pre, with pre's first product on points instead of group members
            xyz, x = pre.forward_grouped(grouper, xyz, x.transpose(1, 2))  # [B, S, 3], [B, C', S]
            x = pos.forward_dense(x)  # [B, C', S]
            levels.append((xyz, x))
        decoded = []
        for i, step in enumerate(self.decode_list):
            fine_xyz, skip = levels[-2 - i]
            x = step.forward_dense(fine_xyz, levels[-1 - i][0], skip, x)
            decoded.append((fine_xyz, x))
        return SegFeatures(
            encoder=[(p.transpose(1, 2), f) for p, f in levels],
            decoder=[(p.transpose(1, 2), f) for p, f in decoded],
        )

    def forward(self, points: Tensor) -> SegFeatures:
        """See :meth:`forward_features`."""
        return self.forward_features(points)


class PointMLPPartSeg(PointMLPSegBackbone):
    r"""The official PointMLP part-segmentation network (ShapeNetPart).

    From `"Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP
    Framework" <https://arxiv.org/abs/2202.07123>`_ (ICLR 2022).

    :class:`PointMLPSegBackbone` over xyz + normals (6 channels), plus

    - **global context**: every encoder level :math:`s` is mapped to ``gmp_dim`` channels
      (``gmp_map_list``, coarsest level first) and max-pooled over its points; the
      concatenation goes through ``gmp_map_end``;
    - **category token**: the one-hot object category through two
      :class:`~pointset.nn.ConvBNReLU1D` (``cls_map``, 16 -> ``cls_dim`` -> ``cls_dim``);
    - **classifier**: per point :math:`[x_i \,\|\, g \,\|\, c]` through
      ``Conv1d(., 128) -> BatchNorm1d -> Dropout(0.5) -> Conv1d(128, num_classes)`` (no
      activation between them, as in the official code) and a log-softmax over the parts.

    State-dict keys and shapes equal the official ones (584 keys, 16,755,594 parameters at
    50 parts), so official checkpoints load with ``strict=True``. The official constructor
    keywords are accepted, so its configs build unchanged.

    Sampling is deterministic: FPS starts at index 0 of every cloud, as the official CUDA
    kernel does (its rule of never picking points with ``|p|^2 <= 1e-3`` is not
    reproduced). Interpolation neighbours are exact (ties to the lower index).

    The constructor applies the official training initialisation (:meth:`init_weights`);
    :meth:`reset_parameters` restores PyTorch's defaults instead.

    The category-token BatchNorm sees one value per sample, so training needs batches of
    at least 2 shapes (the official loader drops the last incomplete batch).

    Args:
        num_classes (int): Parts (the official model predicts all 50 ShapeNetPart parts;
            evaluation masks them to the object's category). (default: ``50``)
        num_categories (int): Object categories of the one-hot token. (default: ``16``)
        gmp_dim (int): Global context channels. (default: ``64``)
        cls_dim (int): Category token channels. (default: ``64``)
        dropout (float): Classifier dropout. (default: ``0.5``)
        **backbone: :class:`PointMLPSegBackbone` arguments except ``in_channels`` (6).

    Shapes:
        - **input:** xyz :math:`(B, 3, N)`, normals :math:`(B, 3, N)`, category
          :math:`(B, 16)` one-hot (or :math:`(B)` integer ids)
        - **output:** :math:`(B, N, \text{num\_classes})` log-probabilities
    """

    def __init__(
        self,
        num_classes: int = 50,
        num_categories: int = 16,
        gmp_dim: int = 64,
        cls_dim: int = 64,
        dropout: float = 0.5,
        **backbone: Any,
    ) -> None:
        if "in_channels" in backbone:
            raise ValueError("pointmlp_partseg always takes xyz + normals (in_channels=6)")
        config = {**BACKBONE_CONFIG, **backbone}
        super().__init__(in_channels=6, **config)
        self.num_classes = num_classes
        self.num_categories = num_categories
        activation, bias = config["activation"], config["bias"]
        self.cls_map = nn.Sequential(
            ConvBNReLU1D(num_categories, cls_dim, bias=bias, activation=activation),
            ConvBNReLU1D(cls_dim, cls_dim, bias=bias, activation=activation),
        )
        self.gmp_map_list = nn.ModuleList(
            ConvBNReLU1D(c, gmp_dim, bias=bias, activation=activation)
            for c in reversed(self.encoder_channels)
        )
        self.gmp_map_end = ConvBNReLU1D(
            gmp_dim * len(self.encoder_channels), gmp_dim, bias=bias, activation=activation
        )
        self.classifier = nn.Sequential(
            nn.Conv1d(gmp_dim + cls_dim + self.out_channels, 128, 1, bias=bias),
            nn.BatchNorm1d(128),
            nn.Dropout(dropout),
            nn.Conv1d(128, num_classes, 1, bias=bias),
        )
        self.init_weights()

    def init_weights(self) -> None:
        """The official training initialisation (``weight_init`` of the part-segmentation
        ``main.py``): Xavier-normal convolution weights, zero biases, BatchNorm weight 1 and
        bias 0; the grouper affines keep alpha 1, beta 0. Called by the constructor."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def category_one_hot(self, category: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
        """``[B, num_categories]`` one-hot of integer ids ``[B]`` (one-hot input passes)."""
        if not isinstance(category, Tensor):
            raise ValueError(f"category must be a tensor, got {type(category).__name__}")
        if category.dim() == 1 and not category.is_floating_point():
            if category.numel() and (
                int(category.min()) < 0 or int(category.max()) >= self.num_categories
            ):
                bad = category[(category < 0) | (category >= self.num_categories)][0]
                raise ValueError(
                    f"category id {int(bad)} is outside [0, {self.num_categories - 1}]"
                )
            category = F.one_hot(category.long(), self.num_categories)
        if category.shape != (batch, self.num_categories):
            raise ValueError(
                f"category must be one-hot [{batch}, {self.num_categories}] or ids [{batch}], "
                f"got {tuple(category.shape)}"
            )
        return category.to(dtype)

    def forward(self, xyz: Tensor, normals: Tensor, category: Tensor) -> Tensor:
        """Log-probabilities ``[B, N, num_classes]`` of every point's part."""
        if not isinstance(xyz, Tensor) or not isinstance(normals, Tensor):
            raise ValueError("xyz and normals must be tensors [B, 3, N]")
        if xyz.dim() != 3 or xyz.size(1) != 3 or normals.shape != xyz.shape:
            raise ValueError(
                f"xyz and normals must both have shape [B, 3, N], got {tuple(xyz.shape)} and "
                f"{tuple(normals.shape)}"
            )
        token = self.category_one_hot(category, xyz.size(0), xyz.dtype)
        feats = self.forward_features(torch.cat([xyz, normals], dim=1))
        x = feats.decoder[-1][1]  # [B, D, N]
        levels = [f for _, f in reversed(feats.encoder)]  # coarsest first
        pooled = [
            m.forward_dense(f).amax(dim=-1, keepdim=True) for m, f in zip(self.gmp_map_list, levels)
        ]
        context = self.gmp_map_end.forward_dense(torch.cat(pooled, dim=1))  # [B, gmp_dim, 1]
        token = _dense(self.cls_map, token.unsqueeze(-1))  # [B, cls_dim, 1]
        n = x.size(-1)
        x = torch.cat([x, context.expand(-1, -1, n), token.expand(-1, -1, n)], dim=1)
        return F.log_softmax(self.classifier(x), dim=1).transpose(1, 2)


class PointMLPSeg(nn.Module):
    r"""Per-point semantic segmentation with a :class:`PointMLPSegBackbone` and a pointwise head.

    The baseline segmenter on point sets: the backbone's full-resolution decoder features
    go through ``ConvBNReLU1D(out_channels, head_dim) -> Dropout -> Conv1d(head_dim, K)``.

    Args:
        num_classes (int): Classes ``K``. (default: ``50``)
        in_channels (int): Input channels, xyz first (e.g. 6 for xyz + rgb or normals).
            (default: ``6``)
        head_dim (int): Hidden width of the head. (default: ``128``)
        dropout (float): Head dropout. (default: ``0.5``)
        **backbone: other :class:`PointMLPSegBackbone` arguments.

    Shapes:
        - **input:** :math:`(B, C_{in}, N)`
        - **output:** :math:`(B, N, K)` logits
    """

    def __init__(
        self,
        num_classes: int = 50,
        in_channels: int = 6,
        head_dim: int = 128,
        dropout: float = 0.5,
        **backbone: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.backbone = PointMLPSegBackbone(in_channels=in_channels, **backbone)
        bias = backbone.get("bias", True)
        activation = backbone.get("activation", "relu")
        self.head = nn.Sequential(
            ConvBNReLU1D(self.backbone.out_channels, head_dim, bias=bias, activation=activation),
            nn.Dropout(dropout),
            nn.Conv1d(head_dim, num_classes, 1),
        )

    def reset_parameters(self) -> None:
        _reset(self)

    def forward(self, points: Tensor) -> Tensor:
        """Logits ``[B, N, num_classes]`` of ``points [B, in_channels, N]``."""
        x = self.backbone(points).decoder[-1][1]  # [B, D, N]
        return _dense(self.head, x).transpose(1, 2)


_PAPER = (
    "Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP "
    "Framework (Ma et al., ICLR 2022), https://arxiv.org/abs/2202.07123"
)


@register_model(
    input="points",
    family="pointmlp",
    paper=_PAPER,
    config=PARTSEG_CONFIG,
    default_cfg=dict(
        task="segmentation",
        call="partseg",
        num_classes=50,
        num_categories=16,
        input_size=(6, 2048),
        param_count=16_755_594,
    ),
    reported=[
        Reported(
            "ShapeNetPart",
            {"instance_mIoU": 86.1, "class_mIoU": 84.6},
            "2,048 points with normals",
            "PointMLP paper",
        )
    ],
)
def pointmlp_partseg(num_classes: int = 50, **kwargs: Any) -> PointMLPPartSeg:
    """PointMLP part segmentation (16.8M parameters for 50 parts); ``kwargs`` override the
    config (the official constructor keywords)."""
    return PointMLPPartSeg(num_classes=num_classes, **{**PARTSEG_CONFIG, **kwargs})


@register_model(
    input="points",
    family="pointmlp",
    paper=_PAPER,
    config=dict(BACKBONE_CONFIG, in_channels=6, head_dim=128, dropout=0.5),
    default_cfg=dict(
        task="segmentation",
        call="points",
        num_classes=50,
        input_size=(6, 2048),
        param_count=16_585_098,
    ),
)
def pointmlp_seg(num_classes: int = 50, **kwargs: Any) -> PointMLPSeg:
    """PointMLP segmentation backbone with a per-point head (baseline, no published
    numbers); ``kwargs`` override the config (``in_channels``, widths, points, k, ...)."""
    config = dict(BACKBONE_CONFIG, in_channels=6, head_dim=128, dropout=0.5)
    config.update(kwargs)
    return PointMLPSeg(num_classes=num_classes, **config)
