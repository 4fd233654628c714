"""Triton kernels of the ``"triton"`` backend (exact kNN, radius and FPS on GPU).

Every kernel measures squared distances the way the native backend does: direct
differences, squared and accumulated coordinate by coordinate in the input dtype,
``((q0 - p0)^2 + (q1 - p1)^2) + ...``, never the expanded ``|q|^2 - 2 q.p + |p|^2``. The
launches switch off floating-point contraction (``enable_fp_fusion=False``), so a GPU does
not fuse a square and an add into one rounding; the bits then equal PyTorch's.

Queries are processed in tiles of ``BLOCK_Q`` rows against tiles of ``BLOCK_N`` points of
the query's own cloud (blocked 2-D loads, masked outside the cloud), reduced with
``tl.min`` / ``tl.max`` / ``tl.sum`` / ``tl.cumsum`` along the point axis. A query tile may
straddle clouds: every row carries its own cloud start and length, so unequal and empty
clouds need no padding.

* :func:`knn_sorted_kernel` - float32 distances, ``K <= 32``: each (distance, index) pair
  is packed into one int64 key (the bits of a non-negative float32 order like the float),
  and every query row keeps its ``KP = next_pow2(K)`` smallest keys; a tile of ``KP``
  points is merged in by one bitonic ``tl.sort`` of the ``2 KP`` keys, skipped when no key
  of the tile beats the tile of bests. One pass over the cloud.
* :func:`knn_kernel` - any dtype and any ``K`` (float64, or ``K > 32``): the ``K``
  nearest points found in ``K`` selection rounds; round ``t`` takes the lexicographically
  smallest (distance, index) pair after the one taken in round ``t - 1``. No per-thread
  heap; ``O(K * n)`` distance evaluations per query.

Both give the same answer: ascending (distance, index), exact for any coordinate scale.
* :func:`radius_kernel` - the points with ``d^2 < r^2`` in index order; a counting pass
  (``WRITE=False``) gives each query's number of kept points (at most ``K``), a second pass
  writes them at the offsets of a prefix sum, so memory follows the edges found.
* :func:`fps_kernel` - one program per cloud runs the whole FPS loop, keeping the running
  distances in a global scratch row that each program reads and writes with the same
  layout (a thread only reads what it wrote).

This module imports ``triton``; it is only imported when the backend runs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sq_dist(q_ptr, x_ptr, rows, pts, qmask, pmask, D: tl.constexpr):
    """Squared distances ``[BLOCK_Q, BLOCK_N]`` of query rows ``rows`` to point rows ``pts``."""
    qc = tl.load(q_ptr + rows * D, mask=qmask, other=0.0)
    pc = tl.load(x_ptr + pts * D, mask=pmask, other=0.0)
    diff = qc[:, None] - pc
    d = diff * diff
    for c in tl.static_range(1, D):
        qc = tl.load(q_ptr + rows * D + c, mask=qmask, other=0.0)
        pc = tl.load(x_ptr + pts * D + c, mask=pmask, other=0.0)
        diff = qc[:, None] - pc
        d = d + diff * diff
    return d


@triton.jit
def knn_kernel(
    x_ptr,
    q_ptr,
    start_ptr,
    count_ptr,
    own_ptr,
    valid_ptr,
    dist_ptr,
    idx_ptr,
    num_queries,
    k,
    D: tl.constexpr,
    SQRT: tl.constexpr,
    HAS_OWN: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``k`` nearest points per query, ascending (distance, local index).

    ``x: [N, D]`` points, ``q: [Q, D]`` queries; query ``i`` searches rows
    ``start[i] .. start[i] + count[i]`` of ``x``. ``own[i]`` (local index, ``HAS_OWN``) is
    skipped; ``valid`` (``HAS_VALID``, one int8 per row of ``x``) turns invalid points into
    distance ``inf`` (still ranked, after every valid point). ``SQRT`` ranks correctly
    rounded square roots instead of squared distances. Writes ``dist: [Q, k]`` (the ranked
    value) and ``idx: [Q, k]`` (local index; ``-1`` when the cloud ran out of points).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    live = rows < num_queries
    start = tl.load(start_ptr + rows, mask=live, other=0)
    count = tl.load(count_ptr + rows, mask=live, other=0)
    if HAS_OWN:
        own = tl.load(own_ptr + rows, mask=live, other=-1)
    longest = tl.max(count, axis=0)
    big = tl.full([BLOCK_Q], 2**62, tl.int64)
    prev_d = tl.full([BLOCK_Q], float("-inf"), tl.float64).to(x_ptr.dtype.element_ty)
    prev_j = tl.full([BLOCK_Q], -1, tl.int64)
    for t in range(0, k):
        best_d = tl.full([BLOCK_Q], float("inf"), tl.float64).to(x_ptr.dtype.element_ty)
        best_j = big
        for j0 in range(0, longest, BLOCK_N):
            j = (j0 + tl.arange(0, BLOCK_N)).to(tl.int64)
            inside = (j[None, :] < count[:, None]) & live[:, None]
            pts = start[:, None] + j[None, :]
            d = _sq_dist(q_ptr, x_ptr, rows, pts, live, inside, D)
            if SQRT:
                d = tl.sqrt_rn(d)
            if HAS_VALID:
                ok = tl.load(valid_ptr + pts, mask=inside, other=0)
                d = tl.where(ok != 0, d, float("inf"))
            after = (d > prev_d[:, None]) | (
                (d == prev_d[:, None]) & (j[None, :] > prev_j[:, None])
            )
            cand = inside & after
            if HAS_OWN:
                cand = cand & (j[None, :] != own[:, None])
            low = tl.min(tl.where(cand, d, float("inf")), axis=1)
            at = tl.min(tl.where(cand & (d == low[:, None]), j[None, :], big[:, None]), axis=1)
            # Earlier tiles hold lower indices: replace only on a strictly smaller distance
            # (or when nothing was found yet and this tile has a candidate).
            better = (at < big) & ((low < best_d) | (best_j == big))
            best_d = tl.where(better, low, best_d)
            best_j = tl.where(better, at, best_j)
        found = best_j < big
        tl.store(dist_ptr + rows * k + t, best_d, mask=live)
        tl.store(idx_ptr + rows * k + t, tl.where(found, best_j, -1), mask=live)
        prev_d = best_d
        prev_j = best_j


@triton.jit
def knn_sorted_kernel(
    x_ptr,
    q_ptr,
    start_ptr,
    count_ptr,
    own_ptr,
    valid_ptr,
    dist_ptr,
    idx_ptr,
    num_queries,
    k,
    D: tl.constexpr,
    SQRT: tl.constexpr,
    HAS_OWN: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    KP: tl.constexpr,
):
    """:func:`knn_kernel` for float32 points and ``k <= KP`` (a power of two): the same
    arguments and output, one pass with packed (distance bits, index) keys."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    live = rows < num_queries
    start = tl.load(start_ptr + rows, mask=live, other=0)
    count = tl.load(count_ptr + rows, mask=live, other=0)
    if HAS_OWN:
        own = tl.load(own_ptr + rows, mask=live, other=-1)
    longest = tl.max(count, axis=0)
    none = 0x7FFFFFFFFFFFFFFF
    best = tl.full([BLOCK_Q, KP], none, tl.int64)
    for j0 in range(0, longest, KP):
        j = (j0 + tl.arange(0, KP)).to(tl.int64)
        inside = (j[None, :] < count[:, None]) & live[:, None]
        pts = start[:, None] + j[None, :]
        d = _sq_dist(q_ptr, x_ptr, rows, pts, live, inside, D)
        if SQRT:
            d = tl.sqrt_rn(d)
        if HAS_VALID:
            ok = tl.load(valid_ptr + pts, mask=inside, other=0)
            d = tl.where(ok != 0, d, float("inf"))
        cand = inside
        if HAS_OWN:
            cand = cand & (j[None, :] != own[:, None])
        key = (d.to(tl.int32, bitcast=True).to(tl.int64) << 32) | j[None, :]
        key = tl.where(cand, key, none)
        if tl.min(tl.min(key, axis=1), axis=0) < tl.max(tl.max(best, axis=1), axis=0):
            both = tl.sort(tl.reshape(tl.join(best, key), [BLOCK_Q, 2 * KP]), dim=1)
            best, _ = tl.split(tl.permute(tl.reshape(both, [BLOCK_Q, 2, KP]), [0, 2, 1]))
    col = tl.arange(0, KP)
    out = live[:, None] & (col[None, :] < k)
    found = best != none
    dist = (best >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    dist = tl.where(found, dist, float("inf"))
    at = tl.where(found, best & 0xFFFFFFFF, -1)
    tl.store(dist_ptr + rows[:, None] * k + col[None, :], dist, mask=out)
    tl.store(idx_ptr + rows[:, None] * k + col[None, :], at, mask=out)


@triton.jit
def radius_kernel(
    x_ptr,
    q_ptr,
    start_ptr,
    count_ptr,
    r2_ptr,
    kept_ptr,
    offset_ptr,
    col_ptr,
    num_queries,
    k,
    D: tl.constexpr,
    WRITE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The first ``k`` points (lowest indices) with ``d^2 < r2`` of every query's cloud.

    ``WRITE=False`` stores each query's kept count ``min(hits, k)`` in ``kept``;
    ``WRITE=True`` writes the global row indices of the kept points to
    ``col[offset[i] : offset[i] + kept[i]]`` in ascending order.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    live = rows < num_queries
    start = tl.load(start_ptr + rows, mask=live, other=0)
    count = tl.load(count_ptr + rows, mask=live, other=0)
    r2 = tl.load(r2_ptr)
    if WRITE:
        offset = tl.load(offset_ptr + rows, mask=live, other=0)
    longest = tl.max(count, axis=0)
    found = tl.zeros([BLOCK_Q], tl.int64)
    for j0 in range(0, longest, BLOCK_N):
        j = (j0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        inside = (j[None, :] < count[:, None]) & live[:, None]
        pts = start[:, None] + j[None, :]
        d = _sq_dist(q_ptr, x_ptr, rows, pts, live, inside, D)
        hit = inside & (d < r2)
        if WRITE:
            rank = found[:, None] + tl.cumsum(hit.to(tl.int64), axis=1) - 1
            keep = hit & (rank < k)
            tl.store(col_ptr + offset[:, None] + rank, pts, mask=keep)
        found += tl.sum(hit.to(tl.int64), axis=1)
    if not WRITE:
        tl.store(kept_ptr + rows, tl.minimum(found, k), mask=live)


@triton.jit
def fps_kernel(
    pos_ptr,
    start_ptr,
    count_ptr,
    steps_ptr,
    first_ptr,
    dist_ptr,
    out_ptr,
    out_stride,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Exact FPS of cloud ``program_id`` (rows ``start .. start + count`` of ``pos``):
    ``steps`` samples from local index ``first``, each next one the point with the largest
    squared distance to the samples so far, ties to the lowest index. Writes local indices
    to ``out[b * out_stride : b * out_stride + steps]``; ``dist`` is scratch (one entry per
    row of ``pos``)."""
    b = tl.program_id(0)
    start = tl.load(start_ptr + b)
    count = tl.load(count_ptr + b)
    steps = tl.load(steps_ptr + b)
    cur = tl.load(first_ptr + b)
    for j0 in range(0, count, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        tl.store(dist_ptr + start + j, float("inf"), mask=j < count)
    for t in range(0, steps):
        tl.store(out_ptr + b * out_stride + t, cur)
        best_d = tl.full([], -1.0, tl.float64)  # running maximum, below any distance
        best_j = tl.full([], 0, tl.int64)
        for j0 in range(0, count, BLOCK_N):
            j = j0 + tl.arange(0, BLOCK_N)
            inside = j < count
            pts = start + j
            qc = tl.load(pos_ptr + (start + cur) * D)
            pc = tl.load(pos_ptr + pts * D, mask=inside, other=0.0)
            diff = pc - qc
            d = diff * diff
            for c in tl.static_range(1, D):
                qc = tl.load(pos_ptr + (start + cur) * D + c)
                pc = tl.load(pos_ptr + pts * D + c, mask=inside, other=0.0)
                diff = pc - qc
                d = d + diff * diff
            old = tl.load(dist_ptr + pts, mask=inside, other=0.0)
            new = tl.minimum(old, d)
            tl.store(dist_ptr + pts, new, mask=inside)
            new = tl.where(inside, new, -1.0)
            high = tl.max(new, axis=0)
            at = tl.min(tl.where(new == high, j, 2**30), axis=0)
            better = high.to(tl.float64) > best_d
            best_d = tl.where(better, high.to(tl.float64), best_d)
            best_j = tl.where(better, at.to(tl.int64), best_j)
        cur = best_j
