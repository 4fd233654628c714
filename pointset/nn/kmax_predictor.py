"""kMaX-DeepLab's mask/class predictor, on image grids and on packed point sets."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset._checks import check_batch, check_points, check_positive_int
from pointset.nn._kmax_blocks import ConvBN, kmax_norm
from pointset.nn.kmeans_cross_attention import cloud_logits
from pointset.ops.prechecked import radius

__all__ = ["KMaXPredictor", "PixelWindow", "pixel_window", "void_bias"]

#: side of the official depthwise kernel of the pixel head
KERNEL = 5


class PixelWindow(NamedTuple):
    """The depthwise 5x5 neighbourhood of every point, as edges binned into kernel taps.

    Attributes:
        target: ``[E]`` long, the point whose window holds the edge.
        source: ``[E]`` long, the neighbour.
        tap: ``[E]`` long, ``(dy + 2) * 5 + (dx + 2)`` for the neighbour's rounded offset
            ``(dy, dx)`` in units of the grid spacing (row-major, as the conv kernel).
    """

    target: Tensor
    source: Tensor
    tap: Tensor


def pixel_window(pos: Tensor, batch: Tensor | None = None, spacing: float = 1.0) -> PixelWindow:
    """Bin each point's neighbours into the 25 taps of a 5x5 kernel.

    Every point ``j`` of the same cloud whose offset ``(pos_j - pos_i) / spacing`` rounds to
    ``(dy, dx)`` with ``|dy|, |dx| <= 2`` falls into tap ``(dy, dx)`` of point ``i``'s window
    (halves round to even). ``pos [N, 2]`` are ``(row, col)`` positions; ``batch [N]``.
    On a full grid with positions ``(row, col) * spacing`` every tap holds exactly the pixel
    a 5x5 convolution reads, and taps outside the image hold nothing (zero padding).
    """
    return _pixel_window(pos, check_batch(batch, pos.size(0)), spacing)


def _pixel_window(pos: Tensor, batch: Tensor | None, spacing: float) -> PixelWindow:
    """:func:`pixel_window` for a ``batch`` its caller has checked."""
    check_points(pos, "pos")
    return _window(pos, batch, spacing)


def _window(pos: Tensor, batch: Tensor | None, spacing: float) -> PixelWindow:
    """:func:`pixel_window` for ``pos`` and ``batch`` their caller has checked."""
    if pos.size(1) != 2:
        raise ValueError(
            f"pos must hold 2 coordinates (row, col) per point for the 5x5 window, got shape {tuple(pos.shape)}"
        )
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    half = KERNEL // 2
    counts = torch.bincount(batch) if batch is not None else torch.tensor([pos.size(0)])
    reach = (half + 0.5) * math.sqrt(2.0) * spacing * (1.0 + 1e-6)
    edges = radius(pos, pos, reach, batch, batch, max_num_neighbors=int(counts.max()))
    target, source = edges[0], edges[1]
    offset = torch.round((pos[source] - pos[target]) / spacing).long()
    keep = (offset.abs() <= half).all(dim=1)
    target, source, offset = target[keep], source[keep], offset[keep] + half
    return PixelWindow(target, source, offset[:, 0] * KERNEL + offset[:, 1])


def void_bias(class_logits: Tensor, void_prior: float = 0.9) -> Tensor:
    """Add ``log((n - 1) * p / (1 - p))`` to the last (void) of ``n`` logits ``[..., n]``."""
    n = class_logits.size(-1)
    bias = torch.zeros(n, dtype=class_logits.dtype, device=class_logits.device)
    bias[-1] = math.log((n - 1) * void_prior / (1.0 - void_prior))
    return class_logits + bias


class _DepthwiseConvBN(nn.Module):
    """``dw 5x5 (zero padding, no bias) -> BN -> GELU`` on grids, on point windows, or on
    isolated points (the center tap alone). Keys: ``conv.weight [C, 1, 5, 5]``, ``norm.*``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, KERNEL, padding=KERNEL // 2, groups=channels, bias=False
        )
        self.norm = kmax_norm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.conv.weight)
        self.norm.reset_parameters()

    def forward(
        self, x: Tensor, grid: tuple[int, int, int] | None = None, window: PixelWindow | None = None
    ) -> Tensor:
        """``x [N, C]`` -> ``[N, C]``; ``grid = (B, H, W)`` for row-major full grids."""
        if grid is not None:
            b, h, w = grid
            img = x.view(b, h, w, -1).permute(0, 3, 1, 2)
            y = self.conv(img).permute(0, 2, 3, 1).reshape(x.shape)
        elif window is not None:
            y = self._window(x, window)
        else:
            y = x * self.conv.weight[:, 0, KERNEL // 2, KERNEL // 2]
        return F.gelu(self.norm(y))

    def _window(self, x: Tensor, window: PixelWindow) -> Tensor:
        """Tap by tap: ``y_i = sum_t w_t * mean_{j in tap t of i} x_j`` (memory ``[N, C]``)."""
        taps = KERNEL * KERNEL
        slot = window.target * taps + window.tap
        count = torch.bincount(slot, minlength=x.size(0) * taps).to(x.dtype)
        weight = self.conv.weight.view(-1, taps)
        y = torch.zeros_like(x)
        for t in range(taps):
            sel = (window.tap == t).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            src, dst = window.source[sel], window.target[sel]
            scale = (1.0 / count[slot[sel]]).unsqueeze(1)
            y = y.index_add(0, dst, x[src] * scale * weight[:, t])
        return y


class KMaXPredictor(nn.Module):
    r"""The predictor of `"kMaX-DeepLab: k-means Mask Transformer"
    <https://arxiv.org/abs/2207.04044>`_ (official ``kMaXPredictor``), on grids and points.

    Pixel (point) head, mask kernels and class logits:

    .. math::
        e_i = \frac{\mathrm{BN}(W_2\, \mathrm{gelu}(\mathrm{BN}(W_1\,
              \mathrm{gelu}(\mathrm{BN}(\mathrm{dw}_{5\times5}(p)_i)))) + b_2)}{\lVert\cdot\rVert_2},
        \quad k_l = \mathrm{BN}(W_m q_l), \quad
        c_l = W_c q_l + b_c + \beta_{\mathrm{void}},
        \quad m_{il} = \mathrm{BN}_1(\langle e_i, k_{b_i l}\rangle),

    where :math:`\beta_{\mathrm{void}} = \log((n-1)\cdot 0.9/0.1)` on the last (void) class
    only and :math:`\mathrm{BN}_1` is a BatchNorm with one channel over all logits (weight
    initialised to 0.1). All BatchNorms use eps 1e-3, momentum 0.01. The depthwise 5x5 conv
    runs exactly on grids (``grid``); on points it reads :func:`pixel_window` taps (the mean
    of the points that fall into a tap; exact on full grids), or, with no window, only the
    center tap (each point alone in its window).

    Args:
        in_channels (int): pixel channels (the layer's bottleneck width).
        query_channels (int): query channels (the official literal 256; equal to the
            bottleneck width in every official configuration).
        num_classes (int): width of the class head, including void (default: 134).
        pixel_head_dim (int): hidden width of the pixel head (official literal 256).
        embed_dim (int): pixel embedding / mask kernel width (official literal 128).

    Shapes:
        - **input:** ``x [N, in_channels]`` packed, ``pos [N, 2]`` (optional,
          ``(row, col)``), ``batch [N]`` (optional); keywords
          ``query [B, query_channels, L]``, ``spacing`` (grid step of ``pos``),
          ``class_query`` (optional, ``[B, query_channels, L]``). Dense
          (:meth:`forward_dense`): ``pixel [B, C, H, W]``, ``query``, ``class_query``.
        - **output:** dict with ``class_logits [B, L, num_classes]``, ``mask_logits [N, L]``
          (dense: ``[B, L, H, W]``) and ``pixel_feature [N, embed_dim]`` (dense:
          ``[B, embed_dim, H, W]``).
    """

    def __init__(
        self,
        in_channels: int,
        query_channels: int,
        num_classes: int = 134,
        pixel_head_dim: int = 256,
        embed_dim: int = 128,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("query_channels", query_channels),
            ("num_classes", num_classes),
            ("pixel_head_dim", pixel_head_dim),
            ("embed_dim", embed_dim),
        ):
            check_positive_int(value, name)
        self.in_channels = in_channels
        self.query_channels = query_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self._pixel_space_head_conv0bnact = _DepthwiseConvBN(in_channels)
        self._pixel_space_head_conv1bnact = ConvBN(
            in_channels, pixel_head_dim, act=True, conv2d=True
        )
        self._pixel_space_head_last_convbn = ConvBN(
            pixel_head_dim, embed_dim, bias=True, conv2d=True, init=0.01
        )
        self._transformer_mask_head = ConvBN(query_channels, embed_dim)
        self._transformer_class_head = ConvBN(
            query_channels, num_classes, bias=True, norm=False, init=0.01
        )
        self._pixel_space_mask_batch_norm = kmax_norm(1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.children():
            m.reset_parameters()
        nn.init.constant_(self._pixel_space_mask_batch_norm.weight, 0.1)

    def pixel_embedding(
        self, x: Tensor, grid: tuple[int, int, int] | None = None, window: PixelWindow | None = None
    ) -> Tensor:
        """``x [N, in_channels]`` -> L2-normalised ``[N, embed_dim]`` (eps 1e-12)."""
        y = self._pixel_space_head_conv0bnact(x, grid, window)
        y = self._pixel_space_head_last_convbn(self._pixel_space_head_conv1bnact(y))
        return F.normalize(y, p=2, dim=1)

    def mask_kernels(self, query: Tensor) -> Tensor:
        """``query [B, query_channels, L]`` -> mask kernels ``[B, L, embed_dim]``."""
        return self._transformer_mask_head(query).transpose(1, 2)

    def class_logits(self, query: Tensor) -> Tensor:
        """``query [B, query_channels, L]`` -> class logits ``[B, L, num_classes]``."""
        return void_bias(self._transformer_class_head(query).transpose(1, 2))

    def mask_norm(self, logits: Tensor) -> Tensor:
        """The 1-channel BatchNorm over all mask logits (any shape)."""
        return self._pixel_space_mask_batch_norm(logits.reshape(-1, 1)).view_as(logits)

    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        query: Tensor,
        spacing: float = 1.0,
        class_query: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Predict class and mask logits of packed pixels / points ``x [N, C]``; see the
        class docstring. ``class_query`` (same shape as ``query``) feeds the class head
        instead of ``query`` (the official final prediction uses separate class and mask
        embeddings of the centers)."""
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must be packed pixels [N, {self.in_channels}], got {shape} "
                "(feature maps go to forward_dense)"
            )
        batch = check_batch(batch, x.size(0))
        if pos is not None:
            check_points(pos, "pos")
            if pos.size(0) != x.size(0):
                raise ValueError(f"pos has {pos.size(0)} points but x has {x.size(0)}")
        return self._predict(x, query, batch, pos, spacing, class_query)

    def forward_dense(
        self, pixel: Tensor, query: Tensor, class_query: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The official layout: ``pixel [B, C, H, W]`` -> mask logits ``[B, L, H, W]`` and
        pixel features ``[B, embed_dim, H, W]``."""
        if not isinstance(pixel, Tensor) or pixel.dim() != 4:
            shape = tuple(pixel.shape) if isinstance(pixel, Tensor) else type(pixel).__name__
            raise ValueError(f"pixel must be [B, C, H, W], got {shape}")
        return self._predict(pixel, query, None, None, 1.0, class_query)

    def _predict(
        self,
        pixel: Tensor,
        query: Tensor,
        batch: Tensor | None,
        pos: Tensor | None,
        spacing: float,
        class_query: Tensor | None,
    ) -> dict[str, Tensor]:
        if (
            not isinstance(query, Tensor)
            or query.dim() != 3
            or query.size(1) != self.query_channels
        ):
            shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise ValueError(f"query must be [B, {self.query_channels}, L], got {shape}")
        grid = None
        if pixel.dim() == 4:
            b, c, h, w = pixel.shape
            if b != query.size(0):
                raise ValueError(f"pixel has batch size {b} but query has {query.size(0)}")
            grid = (b, h, w)
            pixel = pixel.flatten(2).transpose(1, 2).reshape(b * h * w, c)
            batch = torch.arange(b, device=pixel.device).repeat_interleave(h * w)
        if pixel.dim() != 2 or pixel.size(1) != self.in_channels:
            raise ValueError(f"pixel must be [N, {self.in_channels}], got {tuple(pixel.shape)}")
        if batch is None:
            batch = torch.zeros(pixel.size(0), dtype=torch.long, device=pixel.device)
        counts = torch.bincount(batch, minlength=query.size(0))
        if counts.numel() != query.size(0) or bool((counts == 0).any()):
            raise ValueError(
                f"a cloud is empty: every one of the {query.size(0)} clouds of query needs points; per cloud "
                f"from batch: {counts.tolist()}"
            )
        window = _window(pos, batch, spacing) if pos is not None else None
        feature = self.pixel_embedding(pixel, grid, window)
        kernels = self.mask_kernels(query)
        logits = self.mask_norm(cloud_logits(feature, kernels, batch, counts))
        classes = self.class_logits(query if class_query is None else class_query)
        out = {"class_logits": classes, "mask_logits": logits, "pixel_feature": feature}
        if grid is not None:
            b, h, w = grid
            out["mask_logits"] = logits.view(b, h, w, -1).permute(0, 3, 1, 2)
            out["pixel_feature"] = feature.view(b, h, w, -1).permute(0, 3, 1, 2)
        return out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.query_channels}, "
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim})"
        )
