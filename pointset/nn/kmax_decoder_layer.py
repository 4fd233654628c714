"""kMaX-DeepLab's transformer decoder layer (k-means cross-attention + self-attention + FFN)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset._checks import batch_counts, check_batch, check_positive_int
from pointset.nn._kmax_blocks import ConvBN, drop_path, kmax_norm
from pointset.nn.kmax_predictor import KMaXPredictor, PixelWindow, _pixel_window
from pointset.nn.kmeans_cross_attention import KMeansCrossAttention

__all__ = ["KMaXDecoderLayer"]


class _AttentionOperation(nn.Module):
    """Multi-head self-attention among cluster centers with BatchNorm on the logits and no
    ``1/sqrt(d)``; keys ``_batch_norm_similarity`` (heads) and ``_batch_norm_retrieved_value``."""

    def __init__(self, value_channels: int, num_heads: int) -> None:
        super().__init__()
        self._batch_norm_similarity = kmax_norm(num_heads)
        self._batch_norm_retrieved_value = kmax_norm(value_channels)

    def reset_parameters(self) -> None:
        self._batch_norm_similarity.reset_parameters()
        self._batch_norm_retrieved_value.reset_parameters()

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``q, k [B, h, d, L]``, ``v [B, h, dv, L]`` -> ``gelu(BN(attn v)) [B, h * dv, L]``."""
        b, h, _, length = q.shape
        logits = torch.einsum("bhdl,bhdm->bhlm", q, k)
        logits = self._batch_norm_similarity(logits.reshape(b, h, -1)).view_as(logits)
        # softmax in at least float32, as the official code under mixed precision
        attn = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)
        out = torch.einsum("bhlm,bhdm->bhdl", attn.to(v.dtype), v).reshape(b, -1, length)
        return F.gelu(self._batch_norm_retrieved_value(out))


class KMaXDecoderLayer(nn.Module):
    r"""The transformer decoder layer of `"kMaX-DeepLab: k-means Mask Transformer"
    <https://arxiv.org/abs/2207.04044>`_ (Yu et al., ECCV 2022), the official
    ``kMaXTransformerLayer``, on image grids and on packed point sets.

    With pixels (points) :math:`p`, centers :math:`q \in \mathbb{R}^{B \times D_q \times L}`:

    .. math::
        s = \mathrm{CBA}(\mathrm{gelu}(p)), \quad z = \mathrm{CBA}(q), \quad
        v = \mathrm{CB}(s),\quad (c, m, e) = \mathrm{Predictor}(s, z),

        a_i = \arg\max_l m_{il}\ (\text{no gradient}), \quad
        u_{bl} = \sum_{i: a_i = l} v_i, \quad
        q \leftarrow q + \mathrm{CB}_0(\mathrm{BN}(u)),

        q \leftarrow \mathrm{gelu}\big(q + \mathrm{CB}_0(\mathrm{MHSA}_{\mathrm{BN}}(z))\big),
        \quad q \leftarrow \mathrm{gelu}\big(q + \mathrm{CB}_0(\mathrm{CBA}(q))\big),

    where CB(A) is a 1x1 conv + BatchNorm (+ GELU), :math:`\mathrm{CB}_0` starts with BN
    weight 0, every residual branch has stochastic depth ``drop_path_prob``, and the
    self-attention runs from the **pre-update** centers :math:`z` (the official code; the
    paper's figure differs, deeplab2#157) with BatchNorm on its logits and no
    :math:`1/\sqrt{d}`. The k-means step is :class:`~pointset.nn.KMeansCrossAttention`; the
    predictor (pixel head with depthwise 5x5, mask logits through the 1-channel BatchNorm,
    class logits with the void bias) is :class:`~pointset.nn.KMaXPredictor` under the official
    (misspelt) name ``_predcitor``. State-dict keys and shapes equal the official layer's, so
    its checkpoints load with ``strict=True``.

    **Dense vs packed.** :meth:`forward_dense` (``pixel_feature [B, Cp, H, W]``) is the
    official computation. :meth:`forward` (``x [N, Cp]``, ``pos``, ``batch [N]``) runs the same arithmetic on
    ragged point sets: each point only meets the centers of its own cloud. The depthwise 5x5
    conv of the pixel head reads the taps of :func:`~pointset.nn.kmax_predictor.pixel_window`
    when ``pos [N, 2]`` is given (exact on full grids: a grid packed with its ``(row, col)``
    positions gives the dense numbers), and only the center tap when ``pos`` is ``None``
    (3-D point clouds, where the 5x5 kernel has no meaning). The official batching
    zero-pads every image to a fixed size, and those padded pixels are argmax'd into
    clusters, added to the k-means sums and counted in every BatchNorm's batch statistics;
    the packed path has no padding, so it equals the official code on unpadded inputs.

    Args:
        num_classes (int): width of the class head incl. void (default: 133, the official
            default; the decoder passes ``num_classes + 1``).
        in_channels (int): pixel channels ``Cp`` (default: 2048).
        query_channels (int): center channels ``Dq`` (default: 256).
        base_filters (int): base width (default: 128).
        num_heads (int): self-attention heads (default: 8).
        bottleneck_expansion (float): bottleneck = ``round(base_filters * this)`` (default: 2).
        key_expansion (float): total key depth = ``round(base_filters * this)`` (default: 1).
        value_expansion (float): total value depth = ``round(base_filters * this)``
            (default: 2).
        drop_path_prob (float): stochastic depth of the three residual branches (default: 0).
        pixel_head_dim (int): the predictor's hidden pixel width (official literal 256).
        embed_dim (int): pixel embedding / mask kernel width (official literal 128).
        ffn_dim (int): FFN hidden width (official literal 2048).

    Shapes:
        - **input (dense):** ``pixel_feature [B, Cp, H, W]``, ``query_feature [B, Dq, L]``.
        - **output (dense):** ``(query [B, Dq, L], {"class_logits": [B, L, num_classes],
          "mask_logits": [B, L, H, W], "pixel_feature": [B, embed_dim, H, W],
          "assignment": [B, H * W]})``.
        - **input (packed):** ``x [N, Cp]`` (points sorted by cloud), ``pos [N, 2]``
          (optional), ``batch [N]`` (optional); keywords ``query_feature [B, Dq, L]``,
          ``spacing`` (float, grid step of ``pos``) or a precomputed ``window``.
        - **output (packed):** ``(query [B, Dq, L], {"class_logits": [B, L, num_classes],
          "mask_logits": [N, L], "pixel_feature": [N, embed_dim], "assignment": [N]})``.
    """

    def __init__(
        self,
        num_classes: int = 133,
        in_channels: int = 2048,
        query_channels: int = 256,
        base_filters: int = 128,
        num_heads: int = 8,
        bottleneck_expansion: float = 2,
        key_expansion: float = 1,
        value_expansion: float = 2,
        drop_path_prob: float = 0.0,
        pixel_head_dim: int = 256,
        embed_dim: int = 128,
        ffn_dim: int = 2048,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("query_channels", query_channels),
            ("base_filters", base_filters),
            ("num_heads", num_heads),
            ("pixel_head_dim", pixel_head_dim),
            ("embed_dim", embed_dim),
            ("ffn_dim", ffn_dim),
        ):
            check_positive_int(value, name)
        bottleneck = int(round(base_filters * bottleneck_expansion))
        key_depth = int(round(base_filters * key_expansion))
        value_depth = int(round(base_filters * value_expansion))
        if bottleneck < 1:
            raise ValueError(
                f"bottleneck_expansion={bottleneck_expansion} leaves no bottleneck channels "
                f"for base_filters={base_filters}"
            )
        if key_depth % num_heads or value_depth % num_heads:
            raise ValueError(
                f"key depth {key_depth} and value depth {value_depth} must divide by num_heads={num_heads}"
            )
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.query_channels = query_channels
        self.num_heads = num_heads
        self.bottleneck = bottleneck
        self.key_depth = key_depth
        self.value_depth = value_depth
        self.drop_path_prob = drop_path_prob
        std = bottleneck**-0.5
        self._query_conv1_bn_act = ConvBN(query_channels, bottleneck, act=True)
        self._pixel_conv1_bn_act = ConvBN(in_channels, bottleneck, act=True, conv2d=True)
        self._query_qkv_conv_bn = ConvBN(bottleneck, 2 * key_depth + value_depth, init=std)
        self._pixel_v_conv_bn = ConvBN(bottleneck, value_depth, conv2d=True, init=std)
        self._query_self_attention = _AttentionOperation(value_depth, num_heads)
        self._query_conv3_bn = ConvBN(value_depth, query_channels, norm_init=0.0)
        self._query_ffn_conv1_bn_act = ConvBN(query_channels, ffn_dim, act=True)
        self._query_ffn_conv2_bn = ConvBN(ffn_dim, query_channels, norm_init=0.0)
        self._predcitor = KMaXPredictor(
            bottleneck, bottleneck, num_classes, pixel_head_dim, embed_dim
        )
        self._kmeans_query_batch_norm_retrieved_value = kmax_norm(value_depth)
        self._kmeans_query_conv3_bn = ConvBN(value_depth, query_channels, norm_init=0.0)
        self.kmeans = KMeansCrossAttention()

    #: The official ``kMaXTransformerLayer`` argument names that differ from ours.
    OFFICIAL_NAMES = {"in_channel_pixel": "in_channels", "in_channel_query": "query_channels"}

    @classmethod
    def from_official(cls, config: dict, **kwargs) -> KMaXDecoderLayer:
        """The layer of the official ``kMaXTransformerLayer(**config)``: ``in_channel_pixel``
        and ``in_channel_query`` become ``in_channels`` and ``query_channels``; ``kwargs``
        (e.g. the widths the official code hard-codes: ``pixel_head_dim``, ``embed_dim``,
        ``ffn_dim``) are passed on. An argument neither layer knows is named in the error."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(k for k in config if cls.OFFICIAL_NAMES.get(k, k) not in known)
        if unknown:
            official = (known - set(cls.OFFICIAL_NAMES.values())) | set(cls.OFFICIAL_NAMES)
            raise ValueError(
                f"unknown kMaXTransformerLayer argument(s) {unknown}; known: {sorted(official)}"
            )
        renamed: dict = {}
        twice = set(kwargs) & {cls.OFFICIAL_NAMES.get(k, k) for k in config}
        for key, value in config.items():
            name = cls.OFFICIAL_NAMES.get(key, key)
            if name in renamed:  # both the official and our name of one argument
                twice.add(name)
            renamed[name] = value
        if twice:
            raise ValueError(f"argument(s) given twice: {sorted(twice)}")
        return cls(**renamed, **kwargs)

    def reset_parameters(self) -> None:
        for m in self.children():
            m.reset_parameters()

    # ------------------------------------------------------------------ entry point
    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        query_feature: Tensor,
        spacing: float = 1.0,
        window: PixelWindow | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One decoder layer on packed pixels / points ``x [N, Cp]``; see the class
        docstring."""
        self._check_query(query_feature)
        pixel_feature = x
        batch = self._check_packed(pixel_feature, query_feature, batch)
        if window is None and pos is not None:
            if pos.dim() != 2 or pos.size(0) != pixel_feature.size(0):
                raise ValueError(
                    f"pos must be [N, 2] with N = {pixel_feature.size(0)}, got {tuple(pos.shape)}"
                )
            window = _pixel_window(pos, batch, spacing)
        return self._run(pixel_feature, query_feature, batch, None, window)

    def forward_dense(
        self, pixel_feature: Tensor, query_feature: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The official dense call on ``pixel_feature [B, Cp, H, W]``, computed on the
        row-major packed pixels."""
        self._check_query(query_feature)
        pixel, query = pixel_feature, query_feature
        if not isinstance(pixel, Tensor) or pixel.dim() != 4:
            shape = tuple(pixel.shape) if isinstance(pixel, Tensor) else type(pixel).__name__
            raise ValueError(f"pixel_feature must be [B, Cp, H, W], got {shape}")
        b, c, h, w = pixel.shape
        if c != self.in_channels:
            raise ValueError(f"pixel_feature has {c} channels, expected {self.in_channels}")
        if b == 0 or h == 0 or w == 0:
            raise ValueError(f"pixel_feature is empty: shape {tuple(pixel.shape)}")
        if b != query.size(0):
            raise ValueError(
                f"pixel_feature has batch size {b} but query_feature has {query.size(0)}"
            )
        self._check_finite(pixel)
        x = pixel.flatten(2).transpose(1, 2).reshape(b * h * w, c)
        batch = torch.arange(b, device=pixel.device).repeat_interleave(h * w)
        out, pred = self._run(x, query, batch, (b, h, w), None)
        pred["mask_logits"] = pred["mask_logits"].view(b, h, w, -1).permute(0, 3, 1, 2)
        pred["pixel_feature"] = pred["pixel_feature"].view(b, h, w, -1).permute(0, 3, 1, 2)
        pred["assignment"] = pred["assignment"].view(b, h * w)
        return out, pred

    def _run(
        self,
        x: Tensor,
        query: Tensor,
        batch: Tensor,
        grid: tuple[int, int, int] | None,
        window: PixelWindow | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``x [N, Cp]``, ``query [B, Dq, L]``, ``batch [N]`` -> (query, predictions)."""
        pixel_space = self._pixel_conv1_bn_act(F.gelu(x))
        query_space = self._query_conv1_bn_act(query)
        pixel_value = self._pixel_v_conv_bn(pixel_space)

        pred = self._predcitor
        feature = pred.pixel_embedding(pixel_space, grid, window)
        # batch was checked on entry: the step runs without checking it again
        counts = torch.bincount(batch, minlength=query.size(0))
        step = self.kmeans._step(
            feature,
            batch,
            counts,
            centers=pred.mask_kernels(query_space),
            value=pixel_value,
            logit_norm=pred._pixel_space_mask_batch_norm,
        )
        kmeans_update = self._kmeans_query_conv3_bn(
            self._kmeans_query_batch_norm_retrieved_value(step.update.transpose(1, 2))
        )
        query = query + drop_path(kmeans_update, self.drop_path_prob, self.training)

        query = query + drop_path(
            self._self_attention(query_space), self.drop_path_prob, self.training
        )
        query = F.gelu(query)
        ffn = self._query_ffn_conv2_bn(self._query_ffn_conv1_bn_act(query))
        query = F.gelu(query + drop_path(ffn, self.drop_path_prob, self.training))
        predictions = {
            "class_logits": pred.class_logits(query_space),
            "mask_logits": step.mask_logits,
            "pixel_feature": feature,
            "assignment": step.assignment,
        }
        return query, predictions

    def _self_attention(self, query_space: Tensor) -> Tensor:
        """``query_space [B, bottleneck, L]`` -> the self-attention update ``[B, Dq, L]``."""
        b, _, length = query_space.shape
        qkv = self._query_qkv_conv_bn(query_space)
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=1)
        heads = self.num_heads
        attn = self._query_self_attention(
            q.reshape(b, heads, -1, length),
            k.reshape(b, heads, -1, length),
            v.reshape(b, heads, -1, length),
        )
        return self._query_conv3_bn(attn)

    # ------------------------------------------------------------------ checks
    def _check_query(self, query: Tensor) -> None:
        if not isinstance(query, Tensor) or query.dim() != 3 or not query.is_floating_point():
            shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise ValueError(
                f"query_feature must be a floating [B, {self.query_channels}, L] tensor, got {shape}"
            )
        if query.size(1) != self.query_channels:
            raise ValueError(
                f"query_feature has {query.size(1)} channels, expected {self.query_channels} "
                f"(shape {tuple(query.shape)})"
            )
        if query.size(0) == 0 or query.size(2) == 0:
            raise ValueError(f"query_feature is empty: shape {tuple(query.shape)}")
        self._check_finite(query, "query_feature")

    def _check_packed(self, x: Tensor, query: Tensor, batch: Tensor | None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"pixel_feature must be a floating [B, C, H, W] (dense) or [N, C] (packed) tensor, got {shape}"
            )
        if x.size(1) != self.in_channels:
            raise ValueError(f"pixel_feature has {x.size(1)} channels, expected {self.in_channels}")
        if x.size(0) == 0:
            raise ValueError("pixel_feature is empty (0 points)")
        self._check_finite(x)
        batch = check_batch(batch, x.size(0))
        counts = batch_counts(batch, x.size(0), query.size(0))
        if counts.numel() != query.size(0):
            raise ValueError(
                f"batch names {counts.numel()} clouds but query_feature holds {query.size(0)}"
            )
        if bool((counts == 0).any()):
            empty = int((counts == 0).nonzero()[0, 0])
            raise ValueError(
                f"cloud {empty} of the {query.size(0)} in query_feature is empty (no points)"
            )
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        return batch

    @staticmethod
    def _check_finite(x: Tensor, name: str = "pixel_feature") -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"{name} contains NaN or inf ({int((~torch.isfinite(x)).sum())} values)"
            )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_classes={self.num_classes}, "
            f"in_channels={self.in_channels}, query_channels={self.query_channels}, "
            f"bottleneck={self.bottleneck}, heads={self.num_heads}, drop_path_prob={self.drop_path_prob})"
        )
