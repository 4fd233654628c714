"""FeatUp's joint bilateral upsampling step (``JBULearnedRange``) on grids and point sets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset._checks import batch_counts, check_batch, check_points, check_positive_int
from pointset.nn._windows import cloud_knn, gather_dot, gather_sum, shifted_dot, shifted_sum

__all__ = ["JointBilateralUpsample"]


def _lattice_offsets(radius: int) -> Tensor:
    """``[(2r+1)^2, 2]`` long ``(dy, dx)`` offsets of the grid taps, row-major."""
    r = torch.arange(-radius, radius + 1)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).view(-1, 2)


def _slot_to_tap(radius: int) -> Tensor:
    """Grid tap of every point-path slot: the taps sorted by ``(dy^2 + dx^2, dy, dx)``."""
    off = _lattice_offsets(radius)
    key = (off.square().sum(1) * (4 * radius + 3) + off[:, 0] + 2 * radius + 1) * (
        4 * radius + 3
    ) + (off[:, 1] + 2 * radius + 1)
    return torch.argsort(key)


def _candidates(radius: int) -> int:
    """Lattice points within the Euclidean ball around the ``(2r+1) x (2r+1)`` square."""
    r = torch.arange(-2 * radius, 2 * radius + 1)
    return int((r.view(-1, 1).square() + r.view(1, -1).square() <= 2 * radius * radius).sum())


def _cloud_sizes(batch: Tensor | None, n: int, num: int | None, name: str) -> list[int]:
    counts = batch_counts(batch, n, num).tolist()
    empty = [b for b, c in enumerate(counts) if c == 0]
    if empty:
        raise ValueError(f"{name} has empty clouds (no points in cloud(s) {empty[:5]})")
    return counts


def cloud_spacing(pos: Tensor, batch: Tensor | None, counts: list[int]) -> Tensor:
    """Median distance from each point to its nearest other point, per cloud: ``[B]``.

    A cloud of one point (no neighbour) gets spacing 1.
    """
    index, sq = cloud_knn(pos, pos, min(2, max(counts)), batch, batch, counts, counts)
    nearest = sq[:, -1].sqrt() if sq.size(1) > 1 else torch.full_like(sq[:, 0], math.inf)
    out, start = [], 0
    for n in counts:
        d = nearest[start : start + n]
        d = d[torch.isfinite(d) & (d > 0)]
        out.append(d.median() if d.numel() else torch.ones((), dtype=pos.dtype, device=pos.device))
        start += n
    return torch.stack(out).to(pos.dtype)


def cloud_spacing_or(spacing, pos: Tensor, batch: Tensor | None, counts: list[int]) -> Tensor:
    """``spacing`` (one positive number or one per cloud) as ``[B]``, or, when ``None``,
    :func:`cloud_spacing` measured on ``pos``."""
    if spacing is None:
        return cloud_spacing(pos, batch, counts)
    per_cloud = torch.as_tensor(spacing, dtype=pos.dtype, device=pos.device).reshape(-1)
    if per_cloud.numel() == 1:
        per_cloud = per_cloud.expand(len(counts))
    if per_cloud.numel() != len(counts) or not bool((per_cloud > 0).all()):
        raise ValueError(
            f"spacing must be one positive number or one per cloud ({len(counts)}), "
            f"got {per_cloud.tolist()}"
        )
    return per_cloud


class JointBilateralUpsample(nn.Module):
    r"""One learned joint bilateral upsampling step of `"FeatUp: A Model-Agnostic Framework
    for Features at Any Resolution" <https://arxiv.org/abs/2403.10516>`_ (Fu et al., ICLR
    2024): FeatUp's ``JBULearnedRange``, with its state_dict keys (``range_temp``,
    ``sigma_spatial``, ``range_proj.{0,3}``, ``fixup_proj.{0,3}``), on pixel grids and on
    point sets.

    The source features are first resized to the output points (:math:`\tilde f`, bicubic on
    grids), then filtered with a window :math:`N(i)` of :math:`T = (2r+1)^2` output points
    whose weights come from the guidance :math:`g`:

    .. math::
        s_{ij} &= \exp\!\big(-\lVert (p_j - p_i) / (r\Delta) \rVert^2 / (2\sigma^2)\big),
        \qquad
        a_{ij} = \operatorname{softmax}_{j \in N(i)}
            \big(e^{\tau} \langle h(g_i), h(g_j) \rangle\big), \\
        w_{ij} &= \frac{a_{ij} s_{ij}}{\max(\sum_{j} a_{ij} s_{ij}, 10^{-7})}, \qquad
        k_i = w_i + 0.1\, \phi([w_i \,\Vert\, g_i]), \qquad
        y_i = \sum_{j \in N(i)} k_{ij} \tilde f_j ,

    with :math:`h` the point-wise MLP ``range_proj`` (``G -> K -> K``), :math:`\phi` the
    fixup MLP ``fixup_proj`` (``T + G -> T -> T``) over the window's slots, :math:`\tau` =
    ``range_temp`` (clamped to :math:`e^\tau \in [10^{-4}, 10^4]`), :math:`\sigma` =
    ``sigma_spatial`` and :math:`\Delta` the output spacing. The final taps are not
    renormalised (they may be negative), as upstream.

    **Grid path** ``forward_dense(source [B, C, h, w], guidance [B, G, H, W])``: FeatUp's numbers.
    :math:`\tilde f` is PyTorch's bicubic resize (``align_corners=False``) to ``H x W``, the
    window is the ``(2r+1) x (2r+1)`` square around each pixel with reflect padding at the
    borders (a mirrored pixel counts again), slots in row-major ``(dy, dx)`` order. Any
    ``H, W > r`` work (non-square, odd, not multiples of ``h, w``; ``scale`` is stored but,
    as upstream, unused: the output takes the guidance's size). The filter runs tap by tap
    with its own backward pass, so memory stays ``O(B (C + T) H W)``: no ``[B, C T, H, W]``
    unfold exists, and the gradients are the exact ones (FeatUp's CUDA kernel gives the
    kernel gradient of only 7 of the 49 taps).

    **Point path** ``forward(x [M, C], pos [M, D], batch=None, *, guidance [N, G],
    pos_out [N, D], batch_out=None, spacing=None)``, packed PyG clouds:

    1. :math:`\tilde f_i` = inverse-squared-distance weighted mean of the ``interp_k``
       nearest source points of the same cloud (an exact hit takes that point's value).
    2. :math:`N(i)`: among the :math:`K_c` nearest output points of the same cloud
       (:math:`K_c` = the lattice points within :math:`r\sqrt 2`, 61 for ``r = 3``), the
       ``T`` with the smallest :math:`L_\infty` offset, ties by Euclidean distance then index.
       On a lattice this is exactly the ``(2r+1) x (2r+1)`` square. A cloud of fewer than
       ``T`` points uses all of them; the empty slots get weight 0.
    3. Slot order (what ``fixup_proj`` sees): ascending :math:`\lVert o \rVert^2`, ties by
       the offset :math:`o = (p_j - p_i)/\Delta` coordinate by coordinate (both rounded to
       ``1e-3``). Slot ``s`` then feeds the weights of the grid tap that is the ``s``-th in
       the same order on a lattice (:math:`(dy^2+dx^2, dy, dx)`), so on a lattice with
       positions ``(row, col)`` the slots are the grid taps and on other clouds the ``s``-th
       nearest neighbour plays the ``s``-th nearest tap.
    4. :math:`\Delta` per cloud: ``spacing`` if given (a number or ``[B]``), else the median
       distance from an output point to its nearest other output point.

    Where the point path differs from the grid path on a full grid (positions ``(row, col)``
    in pixels): (a) :math:`\tilde f` is inverse-distance, not bicubic (pass the bicubic
    features to :meth:`filter_points` to compare the rest); (b) within ``r`` pixels of the
    border the window holds the nearest existing pixels instead of mirrored ones. Everywhere
    else the two paths give the same numbers (tested).

    Args:
        guidance_dim (int): guidance channels ``G`` (3 for RGB).
        in_channels (int): feature channels ``C`` (only checked; the layer has no weights on
            the features).
        key_dim (int): width ``K`` of the range MLP (default: 32).
        scale (int): stored for compatibility; unused (default: 2).
        radius (int): window radius ``r``; the window is ``(2r+1)^2`` (default: 3).
        interp_k (int): source points interpolated per output point on the point path
            (default: 4).

    Shapes:
        - **grid input:** ``source [B, C, h, w]``, ``guidance [B, G, H, W]`` with
          ``h <= H``, ``w <= W``, ``H, W > r``
        - **grid output:** ``[B, C, H, W]``
        - **point input:** ``x [M, C]``, ``pos [M, D]``, ``batch [M]``; keywords
          ``guidance [N, G]``,
          ``pos_out [N, D]``, ``batch [M]`` and ``batch_out [N]`` (optional, same clouds,
          none empty, no cloud with more source than output points)
        - **point output:** ``[N, C]``
    """

    def __init__(
        self,
        guidance_dim: int,
        in_channels: int,
        key_dim: int = 32,
        scale: int = 2,
        radius: int = 3,
        interp_k: int = 4,
    ) -> None:
        super().__init__()
        for name, v in (("guidance_dim", guidance_dim), ("in_channels", in_channels), ("key_dim", key_dim),
                        ("scale", scale), ("radius", radius), ("interp_k", interp_k)):  # fmt: skip
            check_positive_int(v, name)
        self.guidance_dim, self.in_channels, self.key_dim = guidance_dim, in_channels, key_dim
        self.scale, self.radius, self.interp_k = scale, radius, interp_k
        self.diameter = 2 * radius + 1
        taps = self.diameter**2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1),
            nn.Conv2d(key_dim, key_dim, 1),
        )  # fmt: skip
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(taps + guidance_dim, taps, 1), nn.GELU(), nn.Dropout2d(0.1),
            nn.Conv2d(taps, taps, 1),
        )  # fmt: skip
        self.register_buffer("slot_to_tap", _slot_to_tap(radius), persistent=False)
        self.candidates = _candidates(radius)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FeatUp's initialisation: ``range_temp = 0``, ``sigma_spatial = 1``, default convs."""
        with torch.no_grad():
            self.range_temp.zero_()
            self.sigma_spatial.fill_(1.0)
        for m in (*self.range_proj, *self.fixup_proj):
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()

    # ------------------------------------------------------------------ shared pieces
    def spatial_kernel(self) -> Tensor:
        """The grid's spatial weights ``[T]`` (row-major taps), in the module's dtype."""
        t = torch.linspace(-1, 1, self.diameter, dtype=self.sigma_spatial.dtype,
                           device=self.sigma_spatial.device)  # fmt: skip
        sq = t.view(-1, 1).square() + t.view(1, -1).square()
        return torch.exp(-sq.reshape(-1) / (2 * self.sigma_spatial**2))

    def _temperature(self) -> Tensor:
        return self.range_temp.exp().clamp(1e-4, 1e4)

    @staticmethod
    def _normalise(weights: Tensor, dim: int) -> Tensor:
        return weights / weights.sum(dim, keepdim=True).clamp(min=1e-7)

    # ------------------------------------------------------------------ grid path
    def grid_range_kernel(self, guidance: Tensor) -> Tensor:
        """Range weights ``[B, T, H, W]`` (softmax over the taps) of ``guidance [B, G, H, W]``."""
        keys = self.range_proj(guidance)
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        logits = shifted_dot(keys, padded, self.diameter)
        return torch.softmax(self._temperature() * logits, dim=1)

    def grid_kernel(self, guidance: Tensor) -> Tensor:
        """The final per-pixel filter ``[B, T, H, W]`` (after the fixup) of the grid path."""
        combined = self.grid_range_kernel(guidance) * self.spatial_kernel().view(1, -1, 1, 1)
        combined = self._normalise(combined, 1)
        return combined + 0.1 * self.fixup_proj(torch.cat([combined, guidance], dim=1))

    def forward_dense(self, source: Tensor, guidance: Tensor) -> Tensor:
        """Grid path (see the class docstring): ``[B, C, h, w], [B, G, H, W] -> [B, C, H, W]``."""
        self._check_grid(source, guidance)
        kernel = self.grid_kernel(guidance)
        hr = F.interpolate(source, guidance.shape[-2:], mode="bicubic", align_corners=False)
        padded = F.pad(hr, [self.radius] * 4, mode="reflect")
        return shifted_sum(kernel, padded, self.diameter)

    def _check_grid(self, source: Tensor, guidance: Tensor) -> None:
        for name, t in (("source", source), ("guidance", guidance)):
            if not isinstance(t, Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape [B, C, H, W], got {shape}")
        if source.size(0) != guidance.size(0):
            raise ValueError(
                f"source and guidance must have the same batch size, got {source.size(0)} "
                f"and {guidance.size(0)}"
            )
        self._check_channels(source.size(1), guidance.size(1), "source", "guidance")
        (h, w), (hh, ww) = source.shape[-2:], guidance.shape[-2:]
        if h > hh or w > ww:
            raise ValueError(
                f"source {h}x{w} is larger than the output (guidance) {hh}x{ww}; "
                "the layer upsamples"
            )
        if min(hh, ww) <= self.radius or min(h, w) < 1:
            raise ValueError(
                f"guidance {hh}x{ww} must exceed the radius {self.radius} in both sides "
                "(reflect padding), and the source must be non-empty"
            )

    def _check_channels(self, c: int, g: int, name_c: str, name_g: str) -> None:
        if c != self.in_channels:
            raise ValueError(
                f"{name_c} has {c} channels, the layer expects in_channels={self.in_channels}"
            )
        if g != self.guidance_dim:
            raise ValueError(
                f"{name_g} has {g} channels, the layer expects guidance_dim={self.guidance_dim}"
            )

    # ------------------------------------------------------------------ point path
    def _pointwise(self, mlp: nn.Sequential, x: Tensor, slots: Tensor | None = None) -> Tensor:
        """A 1x1-conv MLP of this module on points: ``x [N, Cin] -> [N, Cout]``.

        ``slots`` (the fixup): the first ``T`` inputs and all outputs are point slots, fed
        the weights of the grid taps ``slot_to_tap``. Dropout2d (train mode) drops a channel
        for all points passed at once.
        """
        first, act, drop, last = mlp
        w0, w1, b1 = first.weight.flatten(1), last.weight.flatten(1), last.bias
        if slots is not None:
            w0 = torch.cat([w0[:, slots], w0[:, slots.numel() :]], 1)
            w1, b1 = w1[slots], b1[slots]
        hidden = act(F.linear(x, w0, first.bias))
        hidden = drop(hidden.t()[None, :, :, None])[0, :, :, 0].t()
        return F.linear(hidden, w1, b1)

    def point_windows(
        self, pos_out: Tensor, batch_out: Tensor | None = None, spacing=None
    ) -> tuple[Tensor, Tensor]:
        """Windows of the point path: ``index [N, T]`` (slot order, ``-1`` = empty slot)
        and offsets ``[N, T, D]`` in units of the spacing ``Delta`` (see the class
        docstring)."""
        pos_out = check_points(pos_out, "pos_out")
        batch_out = check_batch(batch_out, pos_out.size(0), "batch_out")
        counts = _cloud_sizes(batch_out, pos_out.size(0), None, "pos_out")
        return self._windows(pos_out, batch_out, counts, spacing)

    def _windows(self, pos_out, batch_out, counts, spacing) -> tuple[Tensor, Tensor]:
        taps = self.diameter**2
        index, _ = cloud_knn(pos_out, pos_out, self.candidates, batch_out, batch_out,
                             counts, counts)  # fmt: skip
        valid = index >= 0
        off = pos_out[index.clamp_min(0)] - pos_out.unsqueeze(1)  # [N, Kc, D]
        big = torch.finfo(pos_out.dtype).max
        cheb = off.abs().amax(-1).masked_fill(~valid, big)
        keep = torch.sort(cheb, dim=1, stable=True).indices[:, :taps]  # knn order breaks ties
        index, off = (
            index.gather(1, keep),
            off.gather(1, keep.unsqueeze(-1).expand(-1, -1, off.size(-1))),
        )
        delta = self._spacing(spacing, pos_out, batch_out, counts)
        off = off / delta.view(-1, 1, 1)
        # slot order: (|o|^2, o_0, o_1, ...) on values rounded to 1e-3, empty slots last
        valid = index >= 0
        keys = [torch.round(off[..., d] * 1e3) for d in range(off.size(-1))]
        keys.insert(0, torch.round(off.square().sum(-1) * 1e3).masked_fill(~valid, big))
        order = torch.arange(index.size(1), device=index.device).expand_as(index)
        for key in reversed(keys):
            pick = torch.sort(key.gather(1, order), dim=1, stable=True).indices
            order = order.gather(1, pick)
        return index.gather(1, order), off.gather(1, order.unsqueeze(-1).expand_as(off))

    @staticmethod
    def _spacing(spacing, pos, batch, counts) -> Tensor:
        """``Delta`` per point ``[N]`` (see :func:`cloud_spacing_or`)."""
        per_cloud = cloud_spacing_or(spacing, pos, batch, counts)
        return per_cloud.expand(pos.size(0)) if batch is None else per_cloud[batch]

    def filter_points(
        self,
        features: Tensor,
        guidance: Tensor,
        pos_out: Tensor,
        batch_out: Tensor | None = None,
        spacing=None,
    ) -> Tensor:
        """Steps 2-7 of the point path on features already at the output points:
        ``features [N, C]``, ``guidance [N, G]``, ``pos_out [N, D]`` -> ``[N, C]``."""
        pos_out = check_points(pos_out, "pos_out")
        batch_out = check_batch(batch_out, pos_out.size(0), "batch_out")
        counts = _cloud_sizes(batch_out, pos_out.size(0), None, "pos_out")
        self._check_rows(guidance, pos_out.size(0), "guidance", "pos_out")
        self._check_rows(features, pos_out.size(0), "features", "pos_out")
        self._check_channels(features.size(1), guidance.size(1), "features", "guidance")
        index, off = self._windows(pos_out, batch_out, counts, spacing)
        return self._filter(features, guidance, index, off)

    def _filter(self, features: Tensor, guidance: Tensor, index: Tensor, off: Tensor) -> Tensor:
        valid = index >= 0
        safe = index.clamp_min(0)
        t = off / self.radius
        spatial = torch.exp(-t.square().sum(-1) / (2 * self.sigma_spatial**2))
        keys = self._pointwise(self.range_proj, guidance)
        logits = gather_dot(keys, safe, keys) * self._temperature()
        logits = logits.masked_fill(~valid, float("-inf"))
        combined = self._normalise(torch.softmax(logits, dim=1) * spatial, 1)
        kernel = combined + 0.1 * self._pointwise(
            self.fixup_proj, torch.cat([combined, guidance], 1), self.slot_to_tap
        )
        kernel = kernel.masked_fill(~valid, 0.0)
        return gather_sum(kernel, safe, features)

    def interpolate_points(
        self, x: Tensor, pos: Tensor, pos_out: Tensor, batch=None, batch_out=None
    ) -> Tensor:
        """Step 1 of the point path: ``x [M, C]`` at ``pos [M, D]`` -> ``[N, C]`` at
        ``pos_out [N, D]`` (inverse squared distance over the ``interp_k`` nearest)."""
        counts = _cloud_sizes(batch, pos.size(0), None, "pos")
        num = len(counts) if batch_out is None else None
        counts_out = _cloud_sizes(batch_out, pos_out.size(0), num, "pos_out")
        return self._interpolate(x, pos, pos_out, batch, batch_out, counts, counts_out)

    def _interpolate(self, x, pos, pos_out, batch, batch_out, counts, counts_out) -> Tensor:
        index, sq = cloud_knn(pos, pos_out, self.interp_k, batch, batch_out, counts, counts_out)
        weight = 1.0 / sq.clamp_min(torch.finfo(sq.dtype).tiny)  # padding: 1/inf = 0
        hit = sq[:, :1] == 0  # an exact hit takes that point's value
        weight = torch.where(hit, (torch.arange(weight.size(1), device=weight.device) == 0)
                             .to(weight.dtype).expand_as(weight), weight)  # fmt: skip
        weight = weight / weight.sum(1, keepdim=True)
        return gather_sum(weight, index.clamp_min(0), x)

    @staticmethod
    def _check_rows(t: Tensor, n: int, name: str, name_pos: str) -> None:
        if not isinstance(t, Tensor) or t.dim() != 2 or t.size(0) != n:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"{name} must have shape [{n}, channels] (one row per {name_pos} point), got {shape}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {t.dtype}")

    def check_point_inputs(
        self, x, pos, guidance, pos_out, batch, batch_out, what: str
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, list[int], list[int]]:
        """Check the point-path inputs (``what`` names the caller in the error that a source
        cloud is larger than its output); returns ``(pos, pos_out, batch, batch_out,
        counts, counts_out)`` with the points per cloud on each side."""
        pos, pos_out = check_points(pos, "pos"), check_points(pos_out, "pos_out")
        if pos.size(1) != pos_out.size(1):
            raise ValueError(
                f"pos and pos_out must have the same number of coordinates, got "
                f"{pos.size(1)} and {pos_out.size(1)}"
            )
        self._check_rows(x, pos.size(0), "x", "pos")
        self._check_rows(guidance, pos_out.size(0), "guidance", "pos_out")
        self._check_channels(x.size(1), guidance.size(1), "x", "guidance")
        batch = check_batch(batch, pos.size(0), "batch")
        batch_out = check_batch(batch_out, pos_out.size(0), "batch_out")
        if (batch is None) != (batch_out is None):
            raise ValueError("give both batch and batch_out, or neither")
        counts = _cloud_sizes(batch, pos.size(0), None, "pos")
        counts_out = _cloud_sizes(batch_out, pos_out.size(0), len(counts), "pos_out")
        if len(counts_out) != len(counts):
            raise ValueError(f"batch_out has {len(counts_out)} clouds but batch has {len(counts)}")
        larger = [b for b, (m, n) in enumerate(zip(counts, counts_out)) if m > n]
        if larger:
            b = larger[0]
            raise ValueError(
                f"the source is larger than the output: cloud {b} has {counts[b]} source "
                f"points but {counts_out[b]} output points; the {what} upsamples"
            )
        return pos, pos_out, batch, batch_out, counts, counts_out

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
        """Point path (see the class docstring): ``[M, C], [M, D], [N, G], [N, D] -> [N, C]``."""
        pos, pos_out, batch, batch_out, counts, counts_out = self.check_point_inputs(
            x, pos, guidance, pos_out, batch, batch_out, "layer"
        )
        return self._upsample_points(
            x, pos, guidance, pos_out, batch, batch_out, counts, counts_out, spacing
        )

    def _upsample_points(
        self, x, pos, guidance, pos_out, batch, batch_out, counts, counts_out, spacing
    ) -> Tensor:
        """The point path on checked inputs (``counts*``: points per cloud)."""
        hr = self._interpolate(x, pos, pos_out, batch, batch_out, counts, counts_out)
        index, off = self._windows(pos_out, batch_out, counts_out, spacing)
        return self._filter(hr, guidance, index, off)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(guidance_dim={self.guidance_dim}, "
            f"in_channels={self.in_channels}, key_dim={self.key_dim}, radius={self.radius})"
        )
