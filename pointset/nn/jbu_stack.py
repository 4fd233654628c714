"""FeatUp's ``JBUStack``: four joint bilateral upsampling steps and a residual 1x1 fixup."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset.nn.joint_bilateral_upsample import (
    JointBilateralUpsample,
    _cloud_sizes,
    cloud_spacing_or,
)
from pointset.ops.prechecked import voxel_downsample

__all__ = ["JBUStack", "PyramidLevel"]


class PyramidLevel(NamedTuple):
    """One level of the point path's pyramid."""

    pos: Tensor
    """``[N_k, D]`` positions (voxel means of the output points)."""
    guidance: Tensor
    """``[N_k, G]`` guidance averaged over the same voxels."""
    batch: Tensor | None
    """``[N_k]`` cloud index, or ``None``."""
    spacing: Tensor | None
    """``[B]`` spacing of the level's windows (``None``: measured on the level's points)."""


class JBUStack(nn.Module):
    r"""FeatUp's upsampler, `"FeatUp: A Model-Agnostic Framework for Features at Any
    Resolution" <https://arxiv.org/abs/2403.10516>`_ (Fu et al., ICLR 2024): four
    :class:`JointBilateralUpsample` steps ``up1..up4`` and a residual 1x1 fixup,

    .. math::
        f_{k} = \mathrm{up}_k(f_{k-1}, \bar g_k), \qquad
        y = f_4 + 0.1\, W f_4 + 0.1\, b ,

    where :math:`\bar g_k` is the guidance pooled to level :math:`k` and ``fixup_proj`` =
    ``Dropout2d(0.2) -> Conv2d(C, C, 1)`` holds :math:`W, b`. Keys and shapes equal the
    official module's (``JBUStack(384)``: 172,772 parameters), so FeatUp's upsampler weights
    (the ``upsampler.`` part of a hub checkpoint) load with ``strict=True``.

    **Grid path** ``forward_dense(source [B, C, h, w], guidance [B, G, H, W])``, official: step
    :math:`k` gets ``adaptive_avg_pool2d(guidance, (2 h_{k-1}, 2 w_{k-1}))``, so the output
    is always ``16h x 16w`` whatever the guidance size (a smaller guidance is upsampled by
    the pooling's overlapping windows, as upstream).

    **Point path** ``forward(x [M, C], pos [M, D], batch=None, *, guidance [N, G],
    pos_out [N, D], batch_out=None, spacing=None)``: a 4-level pyramid of the output points.
    With :math:`\Delta` the source spacing per cloud (``spacing``, else the median
    nearest-neighbour distance of the source points), level :math:`k = 1, 2, 3` is the
    voxel grid of cell :math:`\Delta / 2^k` anchored at the cloud's minimum corner
    (:func:`pointset.ops.voxel_downsample`): one point per occupied voxel at the mean
    position of its output points, with their mean guidance; its windows use spacing
    :math:`\Delta / 2^k`. Level 4 is the output points with their own guidance and measured
    spacing. On a grid whose size is 16x the source this pooling is exactly
    ``adaptive_avg_pool2d`` (positions at the pooled pixel centres). Each step then runs
    the point path of :class:`JointBilateralUpsample` from one level to the next (see its
    docstring for how it differs from the grid path).

    Args:
        in_channels (int): feature channels ``C``.
        guidance_dim (int): guidance channels ``G`` (default: 3, as upstream).
        key_dim (int): range-MLP width of each step (default: 32).
        radius (int): window radius of each step (default: 3).

    Shapes:
        - **grid input:** ``source [B, C, h, w]`` (``h, w >= 2``), ``guidance [B, G, H, W]``
        - **grid output:** ``[B, C, 16h, 16w]``
        - **point input:** ``x [M, C]``, ``pos [M, D]``, ``batch [M]``; keywords
          ``guidance [N, G]``,
          ``pos_out [N, D]``, ``batch [M]``, ``batch_out [N]`` (optional)
        - **point output:** ``[N, C]``
    """

    def __init__(self, in_channels: int, guidance_dim: int = 3, key_dim: int = 32, radius: int = 3):
        super().__init__()
        self.in_channels, self.guidance_dim = in_channels, guidance_dim
        for k in range(1, 5):
            setattr(
                self,
                f"up{k}",
                JointBilateralUpsample(guidance_dim, in_channels, key_dim, 2, radius),
            )
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(in_channels, in_channels, 1))
        self.reset_parameters()

    @property
    def steps(self) -> tuple[JointBilateralUpsample, ...]:
        return (self.up1, self.up2, self.up3, self.up4)

    def reset_parameters(self) -> None:
        for up in self.steps:
            up.reset_parameters()
        self.fixup_proj[1].reset_parameters()

    def _fixup(self, y: Tensor) -> Tensor:
        return y + 0.1 * self.fixup_proj(y)

    # ------------------------------------------------------------------ grid path
    def forward_dense(self, source: Tensor, guidance: Tensor) -> Tensor:
        """Grid path: ``[B, C, h, w], [B, G, H, W] -> [B, C, 16h, 16w]``."""
        if not isinstance(guidance, Tensor) or guidance.dim() != 4:
            shape = (
                tuple(guidance.shape) if isinstance(guidance, Tensor) else type(guidance).__name__
            )
            raise ValueError(f"guidance must have shape [B, G, H, W], got {shape}")
        if min(source.shape[-2:]) < 2:
            raise ValueError(
                f"source must be at least 2x2 (reflect padding), got {tuple(source.shape)}"
            )
        y = source
        for up in self.steps:
            h, w = y.shape[-2:]
            y = up.forward_dense(y, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
        return self._fixup(y)

    # ------------------------------------------------------------------ point path
    def pyramid(
        self, guidance: Tensor, pos_out: Tensor, batch_out: Tensor | None, spacing: Tensor
    ) -> list[PyramidLevel]:
        """The four levels of the point path (see the class docstring); ``spacing [B]`` is
        the source spacing of every cloud."""
        counts = _cloud_sizes(batch_out, pos_out.size(0), None, "pos_out")
        b = torch.zeros(pos_out.size(0), dtype=torch.long, device=pos_out.device)
        b = b if batch_out is None else batch_out
        corner = pos_out.new_full((len(counts), pos_out.size(1)), float("inf"))
        corner = corner.scatter_reduce(0, b.view(-1, 1).expand_as(pos_out), pos_out, "amin")
        unit = (pos_out - corner[b]) / spacing[b].view(-1, 1)  # the source spacing is 1
        data = torch.cat([pos_out, guidance], 1)
        levels = []
        for k in (1, 2, 3):
            vox = voxel_downsample(unit, 0.5**k, batch_out, x=data, start=0.0)
            pos_k, g_k = vox.x.split([pos_out.size(1), guidance.size(1)], 1)
            levels.append(PyramidLevel(pos_k, g_k, vox.batch, spacing * 0.5**k))
        levels.append(PyramidLevel(pos_out, guidance, batch_out, None))
        return levels

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        *,
        guidance: Tensor,
        pos_out: Tensor,
        batch_out: Tensor | None = None,
        spacing=None,
    ) -> Tensor:
        """Point path: ``[M, C], [M, D], [N, G], [N, D] -> [N, C]`` (see the class docstring)."""
        up1 = self.up1
        pos, pos_out, batch, batch_out, counts, counts_out = up1.check_point_inputs(
            x, pos, guidance, pos_out, batch, batch_out, "stack"
        )
        delta = cloud_spacing_or(spacing, pos, batch, counts)
        y, pos_k, batch_k, counts_k = x, pos, batch, counts
        for up, level in zip(self.steps, self.pyramid(guidance, pos_out, batch_out, delta)):
            counts_next = _cloud_sizes(level.batch, level.pos.size(0), len(counts), "level")
            y = up._upsample_points(y, pos_k, level.guidance, level.pos, batch_k, level.batch,
                                    counts_k, counts_next, level.spacing)  # fmt: skip
            pos_k, batch_k, counts_k = level.pos, level.batch, counts_next
        return self._fixup(y.t()[None, :, :, None])[0, :, :, 0].t()

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(in_channels={self.in_channels}, "
            f"guidance_dim={self.guidance_dim}, steps=4)"
        )
