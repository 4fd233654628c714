"""One description of a batch of point clouds: :class:`Clouds`.

Every operator of :mod:`pointset.ops` and every backend behind it describes its batch with
this type. The points themselves stay in the PyG packed layout, one ``[N, ...]`` tensor whose
rows run cloud after cloud; a :class:`Clouds` says where each cloud starts and how many rows
it holds, and converts between that layout and the padded ``[B, W, ...]`` one.

Views of the same numbers, each computed once and cached:

* tensors on the points' device: ``counts [B]``, ``ptr [B + 1]``, ``batch [N]`` (long);
* NumPy arrays for compiled and SciPy backends: ``counts_np``, ``ptr_np``, ``batch_np``;
* Python lists for loops over clouds: ``counts_list``, ``ptr_list``.

Clouds may be empty anywhere in the batch (a count of 0); ``max_count`` is then taken over
the non-empty ones, and a batch of only empty clouds has ``max_count == 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from .._checks import check_batch


@dataclass(frozen=True, eq=False)
class Clouds:
    """A batch of ``B`` point clouds packed row after row: cloud ``b`` is rows
    ``ptr[b] .. ptr[b + 1] - 1`` of an ``[N, ...]`` tensor.

    Build it with :meth:`from_batch` (a PyG batch vector), :meth:`from_lengths` (points per
    cloud, e.g. the valid lengths of a padded tensor) or :meth:`from_ptr` (cloud offsets).

    Args:
        counts_np: ``[B]`` int64 points per cloud (host memory).
        device: device of the tensor views (the points' device).
        given_batch: the ``[N]`` long batch vector when the caller already holds it.

    Example::

        >>> clouds = Clouds.from_lengths([2, 0, 1])
        >>> clouds.ptr, clouds.batch
        (tensor([0, 2, 2, 3]), tensor([0, 0, 2]))
        >>> clouds.to_padded(torch.tensor([1.0, 2.0, 3.0]), fill=-1)
        tensor([[ 1.,  2.],
                [-1., -1.],
                [ 3., -1.]])
    """

    counts_np: np.ndarray
    device: torch.device = torch.device("cpu")
    given_batch: Tensor | None = field(default=None, repr=False)

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def from_batch(
        cls,
        batch: Tensor | None,
        num_points: int,
        device: torch.device | None = None,
        name: str = "batch",
        num_clouds: int = 0,
        trusted: bool = False,
    ) -> Clouds:
        """The clouds of a PyG batch vector ``batch: [num_points]`` (``None``: one cloud).

        ``num_clouds`` appends empty clouds up to that many. Unless ``trusted``, ``batch``
        is checked (1-D integer, one entry per point, sorted, non-negative) and a
        ``ValueError`` naming ``name`` is raised otherwise; ``trusted`` callers guarantee
        that (see :mod:`pointset.ops.prechecked`).
        """
        if batch is None:
            counts = np.zeros(max(1, num_clouds), dtype=np.int64)
            counts[0] = num_points
            return cls(counts, torch.device("cpu") if device is None else device)
        device = batch.device if device is None else device
        if not trusted:
            fast = (
                isinstance(batch, Tensor)
                and batch.dim() == 1
                and batch.numel() == num_points > 0
                and batch.device.type == "cpu"
                and batch.dtype in (torch.int64, torch.int32)
            )
            if fast:  # one NumPy pass for the usual CPU case
                b = batch.numpy()
                fast = bool(b[0] >= 0) and bool((b[1:] >= b[:-1]).all())
            if not fast:
                batch = check_batch(batch, num_points, name)
        batch = batch.long()
        if num_points == 0:
            return cls(np.zeros(num_clouds, dtype=np.int64), device, batch)
        if batch.device.type == "cpu":
            counts = np.bincount(batch.numpy(), minlength=num_clouds).astype(np.int64)
        else:
            counts = torch.bincount(batch, minlength=num_clouds).cpu().numpy()
        return cls(counts, device, batch)

    @classmethod
    def from_lengths(
        cls,
        lengths: Tensor | Sequence[int] | np.ndarray | None,
        num_clouds: int | None = None,
        width: int | None = None,
        device: torch.device | None = None,
        name: str = "lengths",
    ) -> Clouds:
        """The clouds with ``lengths[b]`` points each.

        For the valid lengths of a padded ``[B, W, ...]`` tensor pass ``num_clouds=B`` and
        ``width=W``: ``lengths=None`` then means every row is full, and a wrong shape, a
        non-integer dtype or a length outside ``[0, W]`` raises a ``ValueError`` naming
        ``name``. The tensor views live on ``device`` (default: ``lengths``' device, or CPU).
        """
        if lengths is None:
            if num_clouds is None or width is None:
                raise ValueError(f"{name}=None needs the padded shape (num_clouds and width)")
            return cls(np.full(num_clouds, width, dtype=np.int64), device or torch.device("cpu"))
        if isinstance(lengths, Tensor):
            if num_clouds is not None and (lengths.dim() != 1 or lengths.numel() != num_clouds):
                raise ValueError(
                    f"{name} must have shape [{num_clouds}], got {tuple(lengths.shape)}"
                )
            if lengths.is_floating_point() or lengths.dtype == torch.bool:
                raise ValueError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
            device = lengths.device if device is None else device
            counts = lengths.detach().cpu().numpy().astype(np.int64).reshape(-1)
        else:
            counts = np.asarray(lengths, dtype=np.int64).reshape(-1)
            if num_clouds is not None and counts.size != num_clouds:
                raise ValueError(f"{name} must have shape [{num_clouds}], got ({counts.size},)")
        if width is not None or bool((counts < 0).any()):
            top = width if width is not None else np.iinfo(np.int64).max
            bad = np.flatnonzero((counts < 0) | (counts > top))
            if bad.size:
                b = int(bad[0])
                limit = f"[0, {width}]" if width is not None else ">= 0"
                raise ValueError(f"{name}[{b}]={int(counts[b])} is outside {limit}")
        return cls(counts, device or torch.device("cpu"))

    @classmethod
    def from_ptr(
        cls, ptr: Tensor | Sequence[int], num_points: int, device: torch.device | None = None
    ) -> Clouds:
        """The clouds of offsets ``ptr: [B + 1]`` (``ptr[0] = 0``, ``ptr[-1] = num_points``,
        non-decreasing); a ``ValueError`` otherwise."""
        if isinstance(ptr, Tensor):
            device = ptr.device if device is None else device
            values = ptr.detach().cpu().reshape(-1).tolist()
        else:
            values = [int(v) for v in ptr]
        if len(values) < 2 or values[0] != 0 or values[-1] != num_points:
            raise ValueError(
                f"ptr must run from 0 to the number of points ({num_points}), got {values}"
            )
        counts = np.diff(np.asarray(values, dtype=np.int64))
        if bool((counts < 0).any()):
            raise ValueError(f"ptr must be non-decreasing, got {values}")
        return cls(counts, device or torch.device("cpu"))

    # -- sizes --------------------------------------------------------------------------

    @property
    def num_clouds(self) -> int:
        """``B``."""
        return int(self.counts_np.size)

    @cached_property
    def num_points(self) -> int:
        """``N``, the points of all clouds."""
        return int(self.counts_np.sum())

    @cached_property
    def max_count(self) -> int:
        """Points of the largest cloud (0 for no points)."""
        return int(self.counts_np.max()) if self.counts_np.size else 0

    @cached_property
    def uniform(self) -> bool:
        """Whether every cloud holds ``max_count`` points (packed == padded, reshaped)."""
        return bool((self.counts_np == self.max_count).all())

    # -- views --------------------------------------------------------------------------

    @cached_property
    def counts_list(self) -> list[int]:
        return self.counts_np.tolist()

    @cached_property
    def ptr_np(self) -> np.ndarray:
        """``[B + 1]`` int64 offsets."""
        ptr = np.zeros(self.num_clouds + 1, dtype=np.int64)
        np.cumsum(self.counts_np, out=ptr[1:])
        return ptr

    @cached_property
    def ptr_list(self) -> list[int]:
        return self.ptr_np.tolist()

    @cached_property
    def batch_np(self) -> np.ndarray:
        """``[N]`` int64 cloud of every row."""
        if self.given_batch is not None and self.given_batch.device.type == "cpu":
            return self.given_batch.numpy()
        return np.repeat(np.arange(self.num_clouds, dtype=np.int64), self.counts_np)

    @cached_property
    def counts(self) -> Tensor:
        """``[B]`` long points per cloud."""
        return torch.from_numpy(self.counts_np).to(self.device)

    @cached_property
    def ptr(self) -> Tensor:
        """``[B + 1]`` long offsets."""
        return torch.from_numpy(self.ptr_np).to(self.device)

    @cached_property
    def batch(self) -> Tensor:
        """``[N]`` long cloud of every row."""
        if self.given_batch is not None:
            return self.given_batch
        if self.device.type == "cpu":
            return torch.from_numpy(self.batch_np)
        return torch.repeat_interleave(
            torch.arange(self.num_clouds, device=self.device), self.counts
        )

    @cached_property
    def local(self) -> Tensor:
        """``[N]`` long position of every row inside its cloud."""
        return torch.arange(self.num_points, device=self.device) - self.ptr[:-1][self.batch]

    # -- derived batches ----------------------------------------------------------------

    def with_num_clouds(self, num_clouds: int) -> Clouds:
        """The same clouds followed by empty ones up to ``num_clouds``."""
        if num_clouds <= self.num_clouds:
            return self
        counts = np.concatenate(
            [self.counts_np, np.zeros(num_clouds - self.num_clouds, dtype=np.int64)]
        )
        return Clouds(counts, self.device, self.given_batch)

    def subset(self, rows: Tensor) -> Clouds:
        """The clouds of the rows ``rows: [S]`` (ascending) of this batch."""
        batch = self.batch[rows]
        counts = torch.bincount(batch, minlength=self.num_clouds).cpu().numpy()
        return Clouds(counts, self.device, batch)

    # -- layouts ------------------------------------------------------------------------

    def valid_mask(self, width: int | None = None) -> Tensor:
        """``[B, width]`` bool, true on the first ``counts[b]`` slots of row ``b``
        (``width`` defaults to ``max_count``)."""
        width = self.max_count if width is None else width
        return torch.arange(width, device=self.device).unsqueeze(0) < self.counts.unsqueeze(1)

    def to_padded(self, values, fill: float = 0.0, width: int | None = None):
        """Packed ``values: [N, ...]`` (tensor or NumPy array) as padded ``[B, width, ...]``.

        Slot ``j < counts[b]`` of row ``b`` holds row ``ptr[b] + j``; the other slots hold
        ``fill``. ``width`` defaults to ``max_count``. When no slot is padding the result is
        a view of ``values``.
        """
        width = self.max_count if width is None else width
        num_clouds, rest = self.num_clouds, tuple(values.shape[1:])
        if self.uniform and width == self.max_count:
            return values.reshape(num_clouds, width, *rest)
        if isinstance(values, np.ndarray):
            out = np.full((num_clouds, width, *rest), fill, dtype=values.dtype)
            for b, (start, n) in enumerate(zip(self.ptr_list, self.counts_list)):
                out[b, :n] = values[start : start + n]
            return out
        out = values.new_full((num_clouds, width, *rest), fill)
        out[self.batch, self.local] = values
        return out

    def unpad(self, padded):
        """Padded ``padded: [B, W, ...]`` (tensor or NumPy array) back to packed
        ``[N, ...]``: the first ``counts[b]`` slots of every row, cloud after cloud."""
        width = padded.shape[1]
        if self.uniform and width == self.max_count:
            return padded.reshape(self.num_points, *padded.shape[2:])
        mask = self.valid_mask(width)
        if isinstance(padded, np.ndarray):
            return padded[mask.cpu().numpy()]
        return padded[mask]
