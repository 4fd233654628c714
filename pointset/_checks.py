"""Input validation shared by the operators: errors are raised where the input enters."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from torch import Tensor


def check_int(value, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum`` and return it as an ``int``.

    Floats (even ``2.0``) and bools are rejected, so a mistyped argument fails where it
    enters instead of being truncated by ``int()``. Raises ``ValueError`` naming ``name``
    with the value: "``name`` must be a positive int, got 2.5" (``minimum`` 1) or
    "``name`` must be an int >= 0, got -1".
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_positive_int(value, name: str) -> int:
    """``check_int(value, name, minimum=1)``: an integer ``>= 1``, returned as ``int``."""
    return check_int(value, name, 1)


def check_points(pos: Tensor, name: str = "pos", allow_empty: bool = False) -> Tensor:
    """Check that ``pos`` is a finite floating ``[N, D]`` tensor and return it.

    Raises ``ValueError`` naming ``name`` for a non-tensor, a wrong rank, an integer dtype,
    an empty cloud (unless ``allow_empty``) or NaN/inf values (with the first bad row).
    """
    if not isinstance(pos, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {pos.dtype}")
    if pos.size(0) == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 points); operators need at least one point")
    if pos.size(1) == 0:
        raise ValueError(f"{name} has 0 coordinates per point (shape {tuple(pos.shape)})")
    # CPU: one NumPy pass, since PyTorch's elementwise kernels cost far more per call.
    cpu_float = pos.device.type == "cpu" and pos.dtype in (torch.float32, torch.float64)
    if cpu_float and bool(np.isfinite(pos.detach().numpy()).all()):
        return pos
    finite = torch.isfinite(pos).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"{name} contains NaN or inf: row {bad} is {pos[bad].tolist()} "
            f"({int((~finite).sum())} bad rows in all)"
        )
    return pos


def check_batch(batch: Tensor | None, num_points: int, name: str = "batch") -> Tensor | None:
    """Check a PyG batch vector: 1-D integer, one entry per point, sorted non-decreasing."""
    if batch is None:
        return None
    if not isinstance(batch, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.numel() != num_points:
        raise ValueError(
            f"{name} must have shape [{num_points}] (one entry per point), got {tuple(batch.shape)}"
        )
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {batch.dtype}")
    if num_points == 0:
        return batch.long()
    if int(batch.min()) < 0:
        raise ValueError(f"{name} has negative entries (min {int(batch.min())})")
    steps = batch[1:] < batch[:-1]
    if bool(steps.any()):
        i = int(steps.nonzero()[0, 0])
        raise ValueError(
            f"{name} must be sorted in non-decreasing order (as PyG's DataLoader makes it); "
            f"{name}[{i}]={int(batch[i])} is followed by {name}[{i + 1}]={int(batch[i + 1])}"
        )
    return batch.long()


def batch_counts(batch: Tensor | None, num_points: int, batch_size: int | None = None) -> Tensor:
    """Points per cloud ``[B]`` (long, on the batch's device) for a checked batch vector."""
    if batch is None:
        return torch.tensor([num_points], dtype=torch.long)
    size = batch_size if batch_size is not None else (int(batch.max()) + 1 if batch.numel() else 0)
    return torch.bincount(batch, minlength=size)


def check_same_dim(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Both point tensors must use the same number of coordinates, dtype and device."""
    if a.size(1) != b.size(1):
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of coordinates, "
            f"got {a.size(1)} and {b.size(1)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def distance_rescale(*points: Tensor) -> float:
    """A power of two ``s`` such that squared distances of ``s * points`` neither overflow
    nor underflow the points' dtype; ``1.0`` when the points are already safe.

    Squared differences of float32 coordinates overflow to inf beyond about 1.8e19 and lose
    all digits (subnormal or 0) below about 1e-19, which makes kNN return wrong neighbours.
    Multiplying by a power of two is exact, so the neighbour order of the scaled points is
    the order of the exact distances of the originals.
    """
    finfo = torch.finfo(points[0].dtype)
    largest = max((float(p.detach().abs().max()) for p in points if p.numel()), default=0.0)
    if largest == 0.0:
        return 1.0
    high = 2.0 ** (math.frexp(finfo.max)[1] // 2 - 4)  # float32: 2^60
    low = 2.0 ** (math.frexp(finfo.tiny)[1] // 2 + 4)  # float32: 2^-58
    if low <= largest <= high:
        return 1.0
    return 2.0 ** -math.frexp(largest)[1]  # brings the largest magnitude into [0.5, 1)


#: Point dtypes that every backend measures in float32 (see :func:`measured`).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def measured(pos: Tensor) -> Tensor:
    """``pos`` in the dtype its distances are computed in: float16 and bfloat16 points are
    measured in float32 on every backend, float32 and float64 in their own dtype.

    Half precision cannot rank distances: its squares round to 3 significant digits (so
    distinct neighbours tie) and overflow to inf past 65504 (coordinates 256 apart). The
    square of a float16 or bfloat16 difference is exact in float32, so every backend agrees.
    """
    return pos.float() if pos.dtype in HALF_DTYPES else pos
