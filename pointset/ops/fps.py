"""Farthest point sampling (FPS): ``fps`` (packed PyG layout) and ``fps_dense`` (padded).

Every backend returns the exact FPS sequence: the first sample is the cloud's first point
(or, with ``random_start=True``, a point drawn from torch's global generator), and each next
sample is the point with the largest squared Euclidean distance to the samples so far, ties
to the lowest index. (One exception: QuickFPS, used for random starts, breaks exact ties
its own way; see below.) Distances are measured in the input dtype, in float32 for float16 /
bfloat16 points on every backend.

Backends (``backend=`` or :func:`~pointset.ops.use_backend`):

* ``"numba"`` - CPU, compiled, in parallel over clouds: an exact KD-tree-pruned loop for
  clouds of 512 points or more, the plain loop below (``pointset.ops._numba_fps``).
* ``"native"`` - no extra dependency, any device. On CPU it runs NumPy loops: the plain
  batched loop for clouds under ``BUCKETED_MIN_POINTS`` points and an exact bucket-pruned
  loop for larger ones (see ``pointset.ops._native_fps``); elsewhere a batched PyTorch loop.
* ``"fpsample"`` - CPU. Fixed start: ``fps_sampling`` (vanilla FPS; it breaks ties towards
  the highest index, so the cloud is passed reversed). Random start: QuickFPS
  (``bucket_fps_kdline_sampling``), whose start index is read in its KD-tree's order; the
  start is still drawn from torch's generator, so results are reproducible. fpsample
  computes in float32 and, with QuickFPS, breaks exact distance ties in tree order.
* ``"torch_cluster"`` - CPU and CUDA; its ``ratio`` is set per cloud to give the exact count,
  a random start is moved to the front of its cloud, coordinates are scaled by a power of
  two below its CUDA start distance (exact) and empty clouds are left out of its batch.
* ``"open3d"`` - CPU, 3-D only. ``farthest_point_down_sample`` honours the start but returns
  the samples in index order; the indices travel in the normals channel and the selection
  order is restored by running exact FPS on the samples alone.
* ``"pytorch3d"`` - ``sample_farthest_points`` when importable.
* ``"triton"`` - CUDA (CPU only under ``TRITON_INTERPRET=1``): the plain loop, one program
  per cloud, bit for bit the native sequence (``pointset.ops._triton_kernels``).

Automatic choice (:func:`auto`), measured with ``benchmarks/ops.py`` on a 2-core AMD EPYC
CPU with torch 2.13 (table in the README):

* CPU: ``numba``, then ``native``, for fixed and random starts alike. numba's KD-tree loop
  is exact (lowest-index ties) and runs at the speed of fpsample's QuickFPS on one cloud of
  200,000 points (0.94x-1.04x its time); on 32 clouds x 1,024 QuickFPS is faster (numba
  takes 1.34x its time), but it cannot honour a given start and breaks ties in tree order,
  so ``auto`` keeps the exact answer. Libraries that honour a fixed start run the plain
  O(N x samples) loop and are slower.
  ``native`` runs the plain loop as NumPy array passes for clouds under
  ``BUCKETED_MIN_POINTS`` points and an exact bucket-pruned loop for larger ones.
* Other devices: ``triton`` (exact, one program per cloud), ``pytorch3d`` (not measured
  here, the machine has no GPU), then ``native``. ``torch_cluster`` is not chosen
  automatically there: its CUDA kernel starts distances at 5e4 (wrong samples once a
  cloud's squared extent exceeds it) and breaks ties in thread order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from .._checks import check_points, measured
from ._backend import select
from ._clouds import Clouds
from ._native_fps import fps_bucketed_numpy, fps_padded, fps_padded_numpy

#: Clouds with at least this many points use the bucket-pruned loop on CPU (below it the
#: plain NumPy loop was faster on every measured sample count).
BUCKETED_MIN_POINTS = 32_768


def quickfps_height(n: int) -> int:
    """KD-tree height for fpsample's QuickFPS on ``n`` points: about ``log2(n) / 2 - 1``,
    the fastest measured for 1,024 (3-4) to 200,000 points (7-8)."""
    return max(1, min(round(math.log2(n) / 2) - 1, int(math.log2(n))))


def _ratio_fraction(value: float, dtype: torch.dtype) -> Fraction:
    """A ratio as the exact fraction of its shortest decimal spelling in its own precision:
    ``0.28`` gives 7/25 whether it came as a Python float or a float32 tensor."""
    scalar = {torch.float16: np.float16, torch.float32: np.float32}.get(dtype, np.float64)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"ratio must be a number in (0, 1], got {value!r}")
    return Fraction(str(scalar(value)))


def sample_count(ratio: Fraction, n: int) -> int:
    """``ceil(ratio * n)`` computed exactly (no floating-point product)."""
    return -((-ratio.numerator * n) // ratio.denominator)


def _ratios(ratio, num_clouds: int) -> list[Fraction]:
    """One exact ratio per cloud from a number, a 0-dim tensor or a ``[B]`` tensor."""
    if isinstance(ratio, Tensor):
        if not ratio.is_floating_point() or ratio.dim() > 1:
            raise ValueError(
                f"ratio must be a float, a 0-dim floating tensor or one per cloud [B], "
                f"got a {ratio.dtype} tensor of shape {tuple(ratio.shape)}"
            )
        dtype = torch.float32 if ratio.dtype == torch.bfloat16 else ratio.dtype
        values = ratio.detach().cpu().to(dtype).reshape(-1).tolist()
        if len(values) == 1:
            values = values * num_clouds
        if len(values) != num_clouds:
            raise ValueError(f"ratio has {len(values)} entries, but there are {num_clouds} clouds")
        return [_ratio_fraction(v, dtype) for v in values]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
    return [_ratio_fraction(float(ratio), torch.float64)] * num_clouds


def _sample_counts(counts: list[int], ratio, num: int | None) -> list[int]:
    """Samples per cloud: ``num`` each, or ``ceil(ratio * n)`` (ratio 0.5 when neither),
    the ceiling taken exactly on the ratio's decimal value."""
    if ratio is not None and num is not None:
        raise ValueError(f"give either ratio or num, not both (got ratio={ratio}, num={num})")
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        for b, n in enumerate(counts):
            if num > n:
                raise ValueError(f"num={num} is larger than cloud {b}, which has {n} points")
        return [num] * len(counts)
    ratios = _ratios(0.5 if ratio is None else ratio, len(counts))
    return [sample_count(f, n) for f, n in zip(ratios, counts)]


def _random_starts(counts: Sequence[int]) -> list[int]:
    """One uniform start per cloud from torch's global CPU generator."""
    draws = torch.rand(len(counts), dtype=torch.float64).tolist()
    return [min(int(u * n), n - 1) if n > 0 else 0 for u, n in zip(draws, counts)]


def _to_front(starts: Sequence[int], counts: Sequence[int], size: int) -> np.ndarray:
    """``[B, size]`` int64 map: slot ``j`` of cloud ``b`` reordered so its start comes first
    and the other points keep their relative order (``src[b, j]`` = original slot)."""
    j = np.arange(size, dtype=np.int64)[None, :]
    s = np.asarray(starts, dtype=np.int64)[:, None]
    src = np.where(j == 0, s, np.where(j <= s, j - 1, j))
    return np.where(j < np.asarray(counts)[:, None], src, j)


def _from_front(original: Tensor, moved: Tensor, rank: Tensor) -> Tensor:
    """Map samples of front-moved clouds back to original indices.

    The moved start sits at slot 0, so it can only be picked again once every point has
    distance 0 - where the plain loop picks index 0 instead.
    """
    return original.masked_fill((moved == 0) & (rank > 0), 0)


# ---------------------------------------------------------------------------------------
# Backends. Each takes packed points pos [N, D], their clouds, the samples per cloud and
# the start per cloud (None: every cloud starts at its first point) and returns
# [B, max(samples)] local indices (entries past samples[b] unused): an int64 NumPy array
# from CPU-only code, else a long tensor on pos's device.
# ---------------------------------------------------------------------------------------


def _fps_native(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> np.ndarray | Tensor:
    num_clouds = clouds.num_clouds
    steps = max(samples)
    start = starts if starts is not None else [0] * num_clouds
    if pos.device.type != "cpu" or pos.dtype not in (torch.float32, torch.float64):
        lengths = None if clouds.uniform else clouds.counts
        start_t = torch.tensor(start, device=pos.device)
        return fps_padded(clouds.to_padded(pos), lengths, steps, start_t)
    packed = pos.detach().numpy()
    counts, ptr = clouds.counts_list, clouds.ptr_list
    out = np.zeros((num_clouds, steps), dtype=np.int64)
    small = []
    for b in range(num_clouds):
        if counts[b] >= BUCKETED_MIN_POINTS:
            cloud = packed[ptr[b] : ptr[b + 1]]
            out[b, : samples[b]] = fps_bucketed_numpy(cloud, samples[b], start[b])
        elif samples[b] > 0:
            small.append(b)
    if small:
        arr = clouds.to_padded(packed)
        part_size = max(counts[b] for b in small)
        part_steps = max(samples[b] for b in small)
        part = arr if len(small) == num_clouds else arr[small]
        part = part[:, :part_size]
        lengths = np.asarray([counts[b] for b in small], dtype=np.int64)
        lengths = None if bool((lengths == part_size).all()) else lengths
        part_start = np.asarray([start[b] for b in small], dtype=np.int64)
        out[small, :part_steps] = fps_padded_numpy(part, lengths, part_steps, part_start)
    return out


def _fps_numba(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> np.ndarray:
    from ._numba_fps import fps_clouds

    start = starts if starts is not None else [0] * clouds.num_clouds
    return fps_clouds(clouds.to_padded(pos.detach().numpy()), clouds.counts_np, samples, start)


def _fps_fpsample(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> np.ndarray:
    import fpsample

    packed = pos.detach().numpy()
    ptr = clouds.ptr_list
    out = np.zeros((clouds.num_clouds, max(samples)), dtype=np.int64)
    for b, (n, s) in enumerate(zip(clouds.counts_list, samples)):
        if s == 0:
            continue
        cloud = packed[ptr[b] : ptr[b + 1]]
        if starts is not None and n >= 8:
            height = quickfps_height(n)
            out[b, :s] = fpsample.bucket_fps_kdline_sampling(cloud, s, height, start_idx=starts[b])
        else:
            # fps_sampling takes the last index on ties; reversed, that is the lowest one.
            start = 0 if starts is None else starts[b]
            idx = fpsample.fps_sampling(cloud[::-1], s, start_idx=n - 1 - start)
            out[b, :s] = n - 1 - idx.astype(np.int64)
    return out


#: torch-cluster's CUDA FPS starts every distance at this value instead of infinity.
TORCH_CLUSTER_DIST_START = 5e4


def scale_below(pad: Tensor, clouds: Clouds, limit: float = TORCH_CLUSTER_DIST_START) -> Tensor:
    """``pad: [B, N, D]`` (valid rows: ``clouds``) times a power of two chosen so that every
    cloud's squared extent
    (squared diagonal of its bounding box) is below ``limit / 2``.

    Scaling by a power of two is exact in floating point (short of underflow), so every
    squared distance scales by the same power of four and FPS picks the same points; the
    scaled squared distances stay below a kernel's ``limit`` start value.
    """
    if pad.numel() == 0:
        return pad
    valid = clouds.valid_mask(pad.size(1)).unsqueeze(2)
    hi = pad.masked_fill(~valid, float("-inf")).amax(1)
    lo = pad.masked_fill(~valid, float("inf")).amin(1)
    span = (hi - lo).nan_to_num(0.0, 0.0, 0.0).double()
    extent2 = float(span.square().sum(1).max())
    if extent2 < limit / 2:
        return pad
    shift = math.ceil(math.log2(extent2 / (limit / 2)) / 2) + 1
    return pad * (2.0**-shift)


def _fps_torch_cluster(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> Tensor:
    """torch-cluster's FPS. Coordinates are scaled by a power of two (:func:`scale_below`)
    so that its CUDA kernel's start distance of 5e4 exceeds every squared distance, and
    empty clouds are left out of its batch. Exact ties still go to its CUDA kernel's thread
    order (its CPU kernel takes the lowest index), which is why ``auto`` does not pick it
    on CUDA."""
    import torch_cluster

    counts = clouds.counts_list
    used = [b for b, n in enumerate(counts) if n > 0]
    if len(used) < len(counts):  # empty clouds hold no rows: renumber the others
        sub = _fps_torch_cluster(
            pos,
            Clouds.from_lengths([counts[b] for b in used], device=pos.device),
            [samples[b] for b in used],
            None if starts is None else [starts[b] for b in used],
        )
        out = torch.zeros(len(counts), sub.size(1), dtype=torch.long, device=pos.device)
        out[used] = sub
        return out
    pad = scale_below(clouds.to_padded(pos), clouds)
    num_clouds, size, dim = pad.shape
    device = pad.device
    if starts is not None and any(s != 0 for s in starts):
        src = torch.from_numpy(_to_front(starts, counts, size)).to(device)
        pad = pad.gather(1, src.unsqueeze(2).expand(-1, -1, dim))
    else:
        src = None
    packed = clouds.unpad(pad)
    batch = clouds.batch
    # torch-cluster keeps ceil(ratio * n) points per cloud (computed in float32); half a
    # point below the wanted count lands exactly on it.
    ratio = torch.tensor(
        [(s - 0.5) / n if n > 0 else 0.5 for s, n in zip(samples, counts)],
        dtype=torch.float32,
        device=device,
    )
    idx = torch_cluster.fps(packed, batch, ratio, random_start=False, batch_size=num_clouds)
    cloud = batch[idx]
    # torch-cluster returns the samples cloud by cloud: a packed batch of its own.
    got = Clouds.from_batch(cloud, idx.numel(), num_clouds=num_clouds, trusted=True)
    if got.counts_list != samples:
        raise RuntimeError(
            f"torch_cluster.fps returned {got.counts_list} samples, wanted {samples}"
        )
    local = idx - clouds.ptr[cloud]
    rank = got.local
    if src is not None:
        local = _from_front(src[cloud, local], local, rank)
    steps = max(samples)
    out = torch.zeros(num_clouds, steps, dtype=torch.long, device=device)
    out[cloud, rank] = local
    return out


def _fps_open3d(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> np.ndarray:
    import open3d as o3d

    num_clouds, dim, counts = clouds.num_clouds, pos.size(1), clouds.counts_list
    if dim != 3:
        raise ValueError(f"backend 'open3d' samples 3-D points only, got {dim}-D points")
    arr = clouds.to_padded(pos.detach().numpy())
    steps = max(samples)
    chosen = np.zeros((num_clouds, steps), dtype=np.int64)
    first = np.zeros(num_clouds, dtype=np.int64)
    found = np.zeros(num_clouds, dtype=np.int64)
    for b, (n, s) in enumerate(zip(counts, samples)):
        if s == 0:
            continue
        start = 0 if starts is None else starts[b]
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(arr[b, :n].astype(np.float64)))
        tags = np.zeros((n, 3))
        tags[:, 0] = np.arange(n)
        cloud.normals = o3d.utility.Vector3dVector(tags)
        picked = cloud.farthest_point_down_sample(s, start)
        idx = np.asarray(picked.normals)[:, 0].astype(np.int64)
        chosen[b, : idx.size] = idx
        found[b] = idx.size
        first[b] = int(np.searchsorted(idx, start))
    # open3d returns its samples in index order, each once (fewer than asked once every
    # point is covered). FPS on the samples alone restores the order. Once every position
    # is covered the full loop picks index 0 over and over, so from the first pick that
    # is missing or repeats an earlier position on, the answer is 0.
    subset = np.take_along_axis(arr, chosen[:, :, None], axis=1)
    order = fps_padded_numpy(subset, found, steps, first)
    out = np.take_along_axis(chosen, order, axis=1)
    for b, s in enumerate(samples):
        picked = arr[b, out[b, : found[b]]]
        _, first_seen = np.unique(picked, axis=0, return_index=True)
        covered = min(int(found[b]), first_seen.size)
        if first_seen.size < found[b]:
            covered = int(np.setdiff1d(np.arange(found[b]), first_seen).min())
        out[b, covered:s] = 0
    return out


def _fps_pytorch3d(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> Tensor:
    from pytorch3d.ops import sample_farthest_points

    pad = clouds.to_padded(pos)
    num_clouds, size, dim = pad.shape
    src = None
    if starts is not None and any(s != 0 for s in starts):
        src = torch.from_numpy(_to_front(starts, clouds.counts_list, size)).to(pad.device)
        pad = pad.gather(1, src.unsqueeze(2).expand(-1, -1, dim))
    _, idx = sample_farthest_points(pad, lengths=clouds.counts, K=samples, random_start_point=False)
    idx = idx.clamp_min(0)
    if src is not None:
        rank = torch.arange(idx.size(1), device=idx.device).expand_as(idx)
        idx = _from_front(src.gather(1, idx), idx, rank)
    return idx


def _fps_triton(
    pos: Tensor, clouds: Clouds, samples: list[int], starts: list[int] | None
) -> Tensor:
    from ._triton_launch import fps_search

    device = pos.device
    first = starts if starts is not None else [0] * clouds.num_clouds
    return fps_search(
        pos,
        clouds,
        torch.tensor(samples, device=device),
        torch.tensor(first, device=device),
        max(samples),
    )


_IMPLS = {
    "native": _fps_native,
    "triton": _fps_triton,
    "numba": _fps_numba,
    "fpsample": _fps_fpsample,
    "torch_cluster": _fps_torch_cluster,
    "open3d": _fps_open3d,
    "pytorch3d": _fps_pytorch3d,
}


def auto(device: torch.device, dtype: torch.dtype, random_start: bool) -> tuple[str, ...]:
    """Backends to try for FPS, fastest first (the rule is in the module docstring)."""
    if device.type != "cpu":
        return ("triton", "pytorch3d", "native")
    return ("numba", "native")


def _run(
    pos: Tensor, clouds: Clouds, samples: list[int], random_start: bool, backend: str | None
) -> np.ndarray | Tensor:
    starts = _random_starts(clouds.counts_list) if random_start else None
    _, impl = select(
        "fps", _IMPLS, pos.device, backend, lambda: auto(pos.device, pos.dtype, random_start)
    )
    return impl(pos, clouds, samples, starts)


def fps(
    pos: Tensor,
    batch: Tensor | None = None,
    ratio: float | None = None,
    num: int | None = None,
    random_start: bool = False,
    backend: str | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Farthest point sampling in the packed (PyG) layout.

    Args:
        pos: ``[N, D]`` points.
        batch: ``[N]`` sorted cloud index of each point, or ``None`` for one cloud.
        ratio: fraction of each cloud to keep, in (0, 1]: a number, a 0-dim tensor or one
            per cloud ``[B]``. A cloud of ``n`` points gives ``ceil(ratio * n)`` samples,
            the ceiling taken exactly on the ratio's shortest decimal spelling in its own
            precision (``ratio=0.28`` of 25 points is 7, not the 8 that
            ``math.ceil(0.28 * 25)`` gives in floating point).
        num: samples per cloud, instead of ``ratio``. Neither given: ``ratio=0.5``.
        random_start: start each cloud at a random point (torch's global generator)
            instead of its first point.
        backend: force a backend (``"native"``, ``"fpsample"``, ``"torch_cluster"``,
            ``"open3d"``, ``"pytorch3d"``); default: automatic choice.
        batch_size: number of clouds ``B`` (trailing clouds may be empty), or ``None``
            for ``batch.max() + 1``.

    Returns:
        ``[M]`` long indices into ``pos``, cloud by cloud in batch order, each cloud's
        samples in selection order.

    Example::

        >>> pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [2.0, 0.0]])
        >>> fps(pos, num=3)
        tensor([0, 2, 3])
    """
    check_points(pos)
    return _fps(pos, batch, ratio, num, random_start, backend, batch_size, trusted=False)


def fps_prechecked(
    pos: Tensor,
    batch: Tensor | None = None,
    ratio: float | None = None,
    num: int | None = None,
    random_start: bool = False,
    backend: str | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """:func:`fps` without the checks of ``pos`` and ``batch`` (the caller's obligations are
    listed in :mod:`pointset.ops.prechecked`)."""
    return _fps(pos, batch, ratio, num, random_start, backend, batch_size, trusted=True)


def _fps(pos, batch, ratio, num, random_start, backend, batch_size, trusted: bool) -> Tensor:
    pos = measured(pos)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    clouds = Clouds.from_batch(
        batch, pos.size(0), pos.device, num_clouds=batch_size or 0, trusted=trusted
    )
    if batch_size is not None and clouds.num_clouds > batch_size:
        raise ValueError(f"batch_size={batch_size} but batch holds cloud {clouds.num_clouds - 1}")
    samples = _sample_counts(clouds.counts_list, ratio, num)
    local = _run(pos, clouds, samples, random_start, backend)
    # The samples are a batch of clouds themselves: cloud b holds samples[b] of them.
    picked = Clouds.from_lengths(samples, device=pos.device)
    if isinstance(local, np.ndarray):
        if clouds.num_clouds > 1:
            local = local + clouds.ptr_np[:-1, None]
        return torch.from_numpy(np.ascontiguousarray(picked.unpad(local))).to(pos.device)
    if clouds.num_clouds > 1:
        local = local + clouds.ptr[:-1].unsqueeze(1)
    return picked.unpad(local)


def fps_dense(
    pos: Tensor,
    num: int,
    lengths: Tensor | None = None,
    random_start: bool = False,
    backend: str | None = None,
) -> Tensor:
    """Farthest point sampling on padded clouds.

    Args:
        pos: ``[B, N, D]`` points; cloud ``b`` is ``pos[b, :lengths[b]]``.
        num: samples per cloud (at most the smallest cloud).
        lengths: ``[B]`` valid points per cloud, or ``None`` when all ``N`` are valid.
        random_start: start each cloud at a random valid point instead of index 0.
        backend: force a backend, as in :func:`fps`.

    Returns:
        ``[B, num]`` long indices into the second dimension of ``pos``.

    Example::

        >>> pos = torch.tensor([[[0.0], [1.0], [5.0], [2.0]]])
        >>> fps_dense(pos, 3)
        tensor([[0, 2, 3]])
    """
    if not isinstance(pos, Tensor) or pos.dim() != 3:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must have shape [B, N, D], got {shape}")
    num_clouds, size, dim = pos.shape
    if num_clouds == 0:
        raise ValueError(f"pos has no clouds (shape {tuple(pos.shape)})")
    clouds = Clouds.from_lengths(lengths, num_clouds, size, pos.device)
    packed = check_points(clouds.unpad(pos))  # padding is never read, may hold NaN
    samples = _sample_counts(clouds.counts_list, None, num)
    local = _run(measured(packed), clouds, samples, random_start, backend)
    if isinstance(local, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(local)).to(pos.device)
    return local
