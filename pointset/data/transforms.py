"""Random and fixed transforms of point clouds, for training augmentation and preprocessing.

Every transform is a callable ``t(data, generator=None)``:

- ``data`` is either a position tensor, one cloud ``[N, 3]`` or a dense batch
  ``[B, N, 3]`` (each cloud of a batch gets its own random draw), or a single-cloud
  :class:`~pointset.PointSet` (``pos [N, 3]``; transforms that reorder or select points
  apply the same indices to every per-point attribute, such as ``x`` and ``pixel``).
- dense batches with per-point features and labels go through
  :meth:`Transform.with_labels`: ``points [B, N, C]`` (xyz first, then features such as rgb)
  and ``labels [B, N]``; points are moved by their xyz only, and transforms that reorder,
  pick or drop points do the same to the features and labels, so every label stays with
  its point.
- ``generator`` is an optional :class:`torch.Generator`; with the same generator state the
  result is the same. ``None`` draws from torch's global generator. A CPU generator may
  drive a transform of CUDA tensors (the draws are moved to the data's device).

The PointMLP training recipe (``translate_pointcloud`` + ``np.random.shuffle`` in the
official code) is :func:`pointmlp_augmentation`: per-axis scale ``U(2/3, 3/2)``, then a
per-axis translation ``U(-0.2, 0.2)``, then a random point order.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> aug = Compose([RandomScaleTranslate(), Jitter(), Shuffle()])
    >>> aug(torch.rand(8, 1024, 3), generator=g).shape
    torch.Size([8, 1024, 3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops import fps_dense
from .point_set import PointSet

#: Attributes that are never indexed per point.
_NOT_PER_POINT = ("batch", "ptr", "grid_size")


def _rand(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``U[0, 1)`` of ``shape`` drawn from ``generator`` (or the global one) on ``like``'s
    device and dtype."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=torch.float64)
    return u.to(device=like.device, dtype=like.dtype)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    u = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float64)
    return u.to(device=like.device, dtype=like.dtype)


def _check_pos(pos: Tensor) -> Tensor:
    if not isinstance(pos, Tensor) or pos.dim() not in (2, 3) or not pos.is_floating_point():
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"expected floating positions [N, D] or [B, N, D], got {shape}")
    return pos


def _single_cloud(data: PointSet) -> PointSet:
    if data.batch is not None or data.pos is None:
        raise ValueError(
            "transforms act on one cloud per PointSet; transform a batch as a dense "
            "[B, N, 3] tensor (or transform the items before batching)"
        )
    return data


class Transform:
    """Base class. Subclasses that only move points implement :meth:`apply`."""

    def apply(self, pos: Tensor, generator: torch.Generator | None) -> Tensor:
        """``pos [..., N, D]`` -> transformed positions of the same shape."""
        raise NotImplementedError

    def __call__(self, data, generator: torch.Generator | None = None):
        if isinstance(data, PointSet):
            out = _single_cloud(data).clone()
            out.pos = self.apply(data.pos, generator)
            return out
        return self.apply(_check_pos(data), generator)

    def with_labels(
        self, points: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Transform points that carry features and dense labels.

        Args:
            points: ``[B, N, C]`` (or ``[N, C]``), ``C >= 3``: xyz, then per-point features
                that move with their point unchanged (colours; normals are not rotated).
            labels: ``[B, N]`` (or ``[N]``) per-point labels, or ``None``.
            generator: as for ``__call__``; the draws are the same as for ``points[..., :3]``.

        Returns:
            ``(points, labels)`` transformed together.
        """
        _check_dense(points, labels)
        xyz = self.apply(points[..., :3], generator)
        return torch.cat([xyz, points[..., 3:]], -1), labels

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_dense(points: Tensor, labels: Tensor | None) -> None:
    if not isinstance(points, Tensor) or points.dim() not in (2, 3) or points.size(-1) < 3:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"expected points [N, C] or [B, N, C] with C >= 3, got {shape}")
    if labels is not None and labels.shape != points.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(points.shape[:-1])} to go with points "
            f"{tuple(points.shape)}, got {tuple(labels.shape)}"
        )


def _gather_rows(values: Tensor, idx: Tensor) -> Tensor:
    """``values [B, N, ...]`` at ``idx [B, M]`` -> ``[B, M, ...]``."""
    flat = idx.reshape(*idx.shape, *([1] * (values.dim() - 2))).expand(
        *idx.shape, *values.shape[2:]
    )
    return torch.gather(values, 1, flat)


class Select(Transform):
    """Base class of transforms that reorder or pick points; they implement :meth:`indices`."""

    def indices(self, pos: Tensor, generator: torch.Generator | None) -> Tensor:
        """``pos [B, N, D]`` -> ``[B, M]`` long indices into ``N``."""
        raise NotImplementedError

    def apply(self, pos: Tensor, generator: torch.Generator | None) -> Tensor:
        dense = pos.unsqueeze(0) if pos.dim() == 2 else pos
        idx = self.indices(dense, generator)
        out = torch.gather(dense, 1, idx.unsqueeze(-1).expand(-1, -1, dense.size(-1)))
        return out[0] if pos.dim() == 2 else out

    def with_labels(self, points, labels=None, generator=None):
        _check_dense(points, labels)
        single = points.dim() == 2
        dense = points.unsqueeze(0) if single else points
        idx = self.indices(dense[..., :3], generator)
        out = _gather_rows(dense, idx)
        lab = None if labels is None else _gather_rows(labels.reshape(dense.shape[:2]), idx)
        if single:
            return out[0], None if lab is None else lab[0]
        return out, lab

    def __call__(self, data, generator: torch.Generator | None = None):
        if not isinstance(data, PointSet):
            return self.apply(_check_pos(data), generator)
        n = _single_cloud(data).num_points
        idx = self.indices(data.pos.unsqueeze(0), generator)[0]
        attrs = {}
        for key, value in data.items():
            if key == "grid_size":
                continue  # a subset or reordering is no longer a full grid
            per_point = isinstance(value, Tensor) and value.dim() >= 1 and value.size(0) == n
            attrs[key] = value[idx] if per_point and key not in _NOT_PER_POINT else value
        return PointSet(**attrs)


class Compose(Transform):
    """Apply ``transforms`` in order, passing the same generator along."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data, generator: torch.Generator | None = None):
        for t in self.transforms:
            data = t(data, generator)
        return data

    def with_labels(self, points, labels=None, generator=None):
        for t in self.transforms:
            points, labels = t.with_labels(points, labels, generator)
        return points, labels

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomScaleTranslate(Transform):
    """Per-axis scale ``U(scale)`` then per-axis translation ``U(shift)``, one draw per cloud
    (PointMLP's ``translate_pointcloud``: ``x * s + t``)."""

    def __init__(
        self, scale: tuple[float, float] = (2 / 3, 3 / 2), shift: tuple[float, float] = (-0.2, 0.2)
    ) -> None:
        self.scale, self.shift = tuple(scale), tuple(shift)

    def apply(self, pos, generator):
        shape = (*pos.shape[:-2], 1, pos.size(-1))
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * _rand(shape, generator, pos)
        t = self.shift[0] + (self.shift[1] - self.shift[0]) * _rand(shape, generator, pos)
        return pos * s + t


class RandomRotate(Transform):
    """Rotation about one coordinate axis (``axis=1``: ``y``, the up axis of ScanObjectNN and
    ModelNet40) by an angle ``U(angle)`` radians, one draw per cloud."""

    def __init__(self, axis: int = 1, angle: tuple[float, float] = (0.0, 2 * math.pi)) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        self.axis, self.angle = axis, tuple(angle)

    def apply(self, pos, generator):
        if pos.size(-1) != 3:
            raise ValueError(f"RandomRotate needs 3-D points, got shape {tuple(pos.shape)}")
        a = self.angle[0] + (self.angle[1] - self.angle[0]) * _rand(pos.shape[:-2], generator, pos)
        c, s = torch.cos(a), torch.sin(a)
        i, j = [k for k in range(3) if k != self.axis]
        rot = torch.zeros(*a.shape, 3, 3, dtype=pos.dtype, device=pos.device)
        rot[..., self.axis, self.axis] = 1
        rot[..., i, i], rot[..., i, j] = c, -s
        rot[..., j, i], rot[..., j, j] = s, c
        return pos @ rot.transpose(-1, -2)


class RandomRotateSO3(Transform):
    """A uniformly random 3-D rotation per cloud (from a normalised Gaussian quaternion)."""

    def apply(self, pos, generator):
        if pos.size(-1) != 3:
            raise ValueError(f"RandomRotateSO3 needs 3-D points, got shape {tuple(pos.shape)}")
        q = _randn((*pos.shape[:-2], 4), generator, pos)
        w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
        rot = torch.stack(
            [
                1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
            ],
            -1,
        ).reshape(*w.shape, 3, 3)  # fmt: skip
        return pos @ rot.transpose(-1, -2)


class Jitter(Transform):
    """Add ``clip(sigma * N(0, 1), -clip, clip)`` to every coordinate."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        if sigma < 0 or clip <= 0:
            raise ValueError(f"need sigma >= 0 and clip > 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip = sigma, clip

    def apply(self, pos, generator):
        return pos + (self.sigma * _randn(pos.shape, generator, pos)).clamp(-self.clip, self.clip)


class PointDropout(Transform):
    """Random point dropout as in PointNet++: per cloud a ratio ``r ~ U(0, max_ratio)`` is
    drawn and each point is dropped with probability ``r`` by overwriting it with the
    cloud's first point, so the point count (and dense batching) is kept. A dropped point
    takes all of the first point's attributes (features, label) too."""

    def __init__(self, max_ratio: float = 0.875) -> None:
        if not 0 <= max_ratio < 1:
            raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio!r}")
        self.max_ratio = max_ratio

    def _drop(self, pos: Tensor, generator: torch.Generator | None) -> Tensor:
        """``[..., N]`` bool: which points to overwrite."""
        ratio = self.max_ratio * _rand((*pos.shape[:-2], 1), generator, pos)
        return _rand(pos.shape[:-1], generator, pos) <= ratio

    def apply(self, pos, generator):
        drop = self._drop(pos, generator)
        return torch.where(drop.unsqueeze(-1), pos[..., :1, :], pos)

    def with_labels(self, points, labels=None, generator=None):
        _check_dense(points, labels)
        drop = self._drop(points[..., :3], generator)
        out = torch.where(drop.unsqueeze(-1), points[..., :1, :], points)
        if labels is not None:
            labels = torch.where(drop, labels[..., :1], labels)
        return out, labels

    def __call__(self, data, generator: torch.Generator | None = None):
        if not isinstance(data, PointSet):
            return self.apply(_check_pos(data), generator)
        n = _single_cloud(data).num_points
        drop = self._drop(data.pos, generator)
        attrs = {}
        for key, value in data.items():
            per_point = isinstance(value, Tensor) and value.dim() >= 1 and value.size(0) == n
            if per_point and key not in _NOT_PER_POINT:
                mask = drop.reshape(n, *([1] * (value.dim() - 1)))
                value = torch.where(mask, value[:1], value)
            attrs[key] = value
        return PointSet(**attrs)


class NormalizeUnitSphere(Transform):
    """Centre each cloud at its centroid and scale it so its farthest point has norm 1."""

    def apply(self, pos, generator=None):
        centred = pos - pos.mean(dim=-2, keepdim=True)
        radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)
        return centred / radius.clamp_min(torch.finfo(pos.dtype).tiny)


class Shuffle(Select):
    """A random order of the points of each cloud."""

    def indices(self, pos, generator):
        return _rand(pos.shape[:2], generator, pos.new_empty(0, dtype=torch.float32)).argsort(1)


class Subsample(Select):
    """Keep ``num`` points per cloud: ``"random"`` (uniform without replacement) or
    ``"fps"`` (farthest point sampling; from a random start drawn from ``generator`` when
    ``random_start``, else from the first point)."""

    def __init__(self, num: int, method: str = "random", random_start: bool = False) -> None:
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        if method not in ("random", "fps"):
            raise ValueError(f"method must be 'random' or 'fps', got {method!r}")
        self.num, self.method, self.random_start = num, method, random_start

    def indices(self, pos, generator):
        b, n = pos.shape[:2]
        if self.num > n:
            raise ValueError(f"cannot keep {self.num} points of a cloud of {n}")
        if self.method == "random":
            order = _rand((b, n), generator, pos.new_empty(0, dtype=torch.float32)).argsort(1)
            return order[:, : self.num]
        if not self.random_start:
            return fps_dense(pos, self.num)
        # Move each cloud's random start to the front, sample from there, map back.
        start = (_rand((b,), generator, pos.new_empty(0, dtype=torch.float64)) * n).long()
        start = start.clamp_max(n - 1)
        order = torch.arange(n, device=pos.device).expand(b, n).clone()
        order[:, 0], order[torch.arange(b), start] = start, 0
        moved = torch.gather(pos, 1, order.unsqueeze(-1).expand(-1, -1, pos.size(-1)))
        return torch.gather(order, 1, fps_dense(moved, self.num))


def pointmlp_augmentation() -> Compose:
    """The official PointMLP training augmentation: :class:`RandomScaleTranslate` with the
    defaults (scale ``U(2/3, 3/2)``, shift ``U(-0.2, 0.2)`` per axis), then :class:`Shuffle`."""
    return Compose([RandomScaleTranslate(), Shuffle()])
