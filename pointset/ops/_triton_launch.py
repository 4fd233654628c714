"""Host side of the ``"triton"`` backend: where it may run, and the kernel launches.

The backend runs on CUDA tensors. CPU tensors are accepted only under Triton's interpreter
(``TRITON_INTERPRET=1`` in the environment before ``triton`` first compiles a kernel),
which executes the very same kernels with NumPy; that is how the test suite checks them.

Dtypes: float32 and float64 are searched in their own precision, bit for bit like the
native backend. float16 and bfloat16 coordinates are converted to float32 first, so their
distances are ranked in float32 (as the ``numba``, ``scipy`` and ``open3d`` backends do),
not in the input dtype as ``native`` does; returned distances are cast back.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ._clouds import Clouds

#: Query rows and point columns of one kernel tile.
BLOCK_Q = 32
BLOCK_N = 128
#: Points per tile of the FPS kernel (one program per cloud).
FPS_BLOCK = 1024
#: Largest ``k`` of the one-pass sorted kNN kernel (float32; its bitonic merge grows as
#: ``k log^2 k`` per tile and its keys live in registers); larger ``k`` and float64 use the
#: selection kernel.
SORTED_MAX_K = 32
#: Query rows per tile of the sorted kNN kernel.
SORTED_BLOCK_Q = 16


def interpreting() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def unusable_reason(device: torch.device) -> str | None:
    """Why the triton backend cannot run on ``device`` now, or ``None`` if it can."""
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if interpreting():
            return None
        return (
            "it runs on CUDA tensors; CPU tensors only under Triton's interpreter "
            "(set TRITON_INTERPRET=1 before triton is imported, as the tests do)"
        )
    return f"it runs on CUDA tensors, not on {device.type}"


def _kernels():
    import triton.language as tl

    from . import _triton_kernels as kernels

    if interpreting() and any(
        type(fn).__name__ != "InterpretedFunction" for fn in (kernels.knn_kernel, tl.max)
    ):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported in this process, so its "
            "kernels were prepared for the GPU; set it before triton is first imported"
        )
    return kernels


def _launch_options(device: torch.device) -> dict:
    # No fused multiply-add: distances must round like PyTorch's separate square and add.
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in for coordinates of ``dtype``."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _points(t: Tensor) -> Tensor:
    return t.detach().to(work_dtype(t.dtype)).contiguous()


def _query_range(points: Clouds, queries: Clouds) -> tuple[Tensor, Tensor]:
    """``(start [Q], count [Q])`` long: the rows of the points' cloud each query searches."""
    cloud = queries.batch
    return points.ptr[:-1][cloud].contiguous(), points.counts[cloud].contiguous()


def knn_search(
    x: Tensor,
    q: Tensor,
    points: Clouds,
    queries: Clouds,
    k: int,
    own: Tensor | None = None,
    valid: Tensor | None = None,
    sqrt: bool = False,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest rows of ``x: [N, D]`` for every query ``q: [Q, D]``.

    ``points`` and ``queries`` are the clouds of ``x`` and ``q`` (as many of each); a query
    searches the rows of its own cloud. ``own: [Q]`` local indices to skip, ``valid: [N]`` bool (invalid points
    rank last, at distance ``inf``), ``sqrt`` ranks square roots. Returns
    ``(dist [Q, k] in the work dtype, idx [Q, k] long local indices)``, ascending, ties to
    the lower index; ``-1`` where a cloud has fewer than ``k`` points.
    """
    kernels = _kernels()
    xs, qs = _points(x), _points(q)
    num = qs.size(0)
    dist = torch.empty(num, k, dtype=xs.dtype, device=x.device)
    idx = torch.empty(num, k, dtype=torch.long, device=x.device)
    if num == 0:
        return dist, idx
    start, count = _query_range(points, queries)
    own_t = start if own is None else own.to(torch.long).contiguous()
    valid_t = start if valid is None else valid.to(torch.int8).contiguous()
    args = (xs, qs, start, count, own_t, valid_t, dist, idx, num, k)
    flags = dict(
        D=xs.size(1),
        SQRT=sqrt,
        HAS_OWN=own is not None,
        HAS_VALID=valid is not None,
        **_launch_options(x.device),
    )
    if xs.dtype == torch.float32 and k <= SORTED_MAX_K:
        grid = (triton_cdiv(num, SORTED_BLOCK_Q),)
        width = max(16, 1 << (k - 1).bit_length())
        kernels.knn_sorted_kernel[grid](*args, BLOCK_Q=SORTED_BLOCK_Q, KP=width, **flags)
    else:
        grid = (triton_cdiv(num, BLOCK_Q),)
        kernels.knn_kernel[grid](*args, BLOCK_Q=BLOCK_Q, BLOCK_N=BLOCK_N, **flags)
    return dist, idx


def radius_search(
    x: Tensor, q: Tensor, points: Clouds, queries: Clouds, r2: float, k: int
) -> tuple[Tensor, Tensor]:
    """For every query ``q[i]``, the first ``k`` rows of ``x`` in its cloud (lowest
    indices; ``points`` and ``queries`` are the clouds of ``x`` and ``q``) with squared
    distance ``< r2`` (``r2`` rounded once to the work dtype).

    Returns ``(row [E], col [E])`` long: grouped by query ascending, ``col`` global rows of
    ``x`` in ascending order. Two passes: count, then write at prefix-sum offsets.
    """
    kernels = _kernels()
    xs, qs = _points(x), _points(q)
    num = qs.size(0)
    device = x.device
    if num == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    start, count = _query_range(points, queries)
    r2_t = torch.tensor([r2], dtype=torch.float64).to(xs.dtype).to(device)
    kept = torch.empty(num, dtype=torch.long, device=device)
    grid = (triton_cdiv(num, BLOCK_Q),)
    args = dict(D=xs.size(1), BLOCK_Q=BLOCK_Q, BLOCK_N=BLOCK_N, **_launch_options(device))
    kernels.radius_kernel[grid](
        xs, qs, start, count, r2_t, kept, kept, kept, num, k, WRITE=False, **args
    )
    offset = torch.cumsum(kept, 0) - kept
    total = int(kept.sum())
    col = torch.empty(max(total, 1), dtype=torch.long, device=device)
    if total:
        kernels.radius_kernel[grid](
            xs, qs, start, count, r2_t, kept, offset, col, num, k, WRITE=True, **args
        )
    row = torch.repeat_interleave(torch.arange(num, device=device), kept)
    return row, col[:total]


def fps_search(pos: Tensor, clouds: Clouds, steps: Tensor, first: Tensor, width: int) -> Tensor:
    """Exact FPS of every cloud of packed ``pos: [N, D]`` (``clouds``): ``steps[b]``
    samples from local index ``first[b]``. Returns ``[B, width]`` long local indices
    (entries past ``steps[b]`` are 0)."""
    kernels = _kernels()
    ps = _points(pos)
    num_clouds = clouds.num_clouds
    out = torch.zeros(num_clouds, width, dtype=torch.long, device=pos.device)
    if num_clouds == 0 or width == 0:
        return out
    scratch = torch.empty(ps.size(0), dtype=ps.dtype, device=pos.device)
    kernels.fps_kernel[(num_clouds,)](
        ps,
        clouds.ptr[:-1].contiguous(),
        clouds.counts.contiguous(),
        steps.to(torch.long).contiguous(),
        first.to(torch.long).contiguous(),
        scratch,
        out,
        width,
        D=ps.size(1),
        BLOCK_N=FPS_BLOCK,
        **_launch_options(pos.device),
    )
    return out


def triton_cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive ints."""
    return -(-a // b)
