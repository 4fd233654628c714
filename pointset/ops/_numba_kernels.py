"""Compiled CPU kernels for the ``"numba"`` backend: kNN and radius search (FPS is in
``_numba_fps``).

Imported only when the backend is used (``numba`` is an optional dependency, part of the
``fast`` extra). Every kernel computes squared distances the way the rest of pointset does -
direct differences accumulated coordinate by coordinate in the input dtype (float32 or
float64; the operators hand half-precision points over as float32),
``((p0 - q0)^2 + (p1 - q1)^2) + ...`` - and breaks ties towards the lowest index, so the
results are identical to the brute-force ``"native"`` backend, not merely close.

kNN and radius search share a uniform cell grid per cloud (:func:`build_grid`): points are
counting-sorted by cell, and queries run in cell order. A kNN query visits cells in
Chebyshev shells around its own until the k-th best distance is below the distance to the
unvisited region; a radius query reads only the cells that meet its ball (cells of half
the radius). Queries run in parallel on ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

# The workqueue layer survives fork() (DataLoader workers), which GNU OpenMP does not; it
# must not be entered from two threads at once, so every parallel call holds _LOCK.
numba.config.THREADING_LAYER_PRIORITY = ["workqueue", "omp", "tbb"]
_LOCK = threading.Lock()

# Relative safety margin of the shell-stopping bound against rounding in cell assignment and
# in low-precision distances (float32 rounds at ~6e-8; this is 160x that).
_BOUND_MARGIN = 1e-5


def _threads() -> int:
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


# ---------------------------------------------------------------------------------------
# The cell grid
# ---------------------------------------------------------------------------------------


class CellGrid(NamedTuple):
    """Points of several clouds counting-sorted into one uniform grid per cloud.

    ``order[cell_start[c] : cell_start[c + 1]]`` are the point rows (ascending) in cell
    ``c``; cloud ``b``'s cells are ``cell0[b] + linear index`` of the integer cell
    coordinates ``0 <= g < dims[b]``, with cell ``g`` covering
    ``lo[b] + g * size[b] .. lo[b] + (g + 1) * size[b]``.
    """

    lo: np.ndarray  # [B, D] float64
    size: np.ndarray  # [B] float64, cell edge
    dims: np.ndarray  # [B, D] int64
    cell0: np.ndarray  # [B + 1] int64
    cell_start: np.ndarray  # [cells + 1] int64
    order: np.ndarray  # [N] int64
    points: np.ndarray  # [N, D] the points in cell order, x[order], for contiguous reads


@njit(cache=True, nogil=True)
def _bounds(x, starts, counts):  # pragma: no cover - compiled
    num_clouds = starts.shape[0]
    dim = x.shape[1]
    lo = np.zeros((num_clouds, dim))
    hi = np.zeros((num_clouds, dim))
    for b in range(num_clouds):
        for c in range(dim):
            lo[b, c] = np.inf
            hi[b, c] = -np.inf
        for i in range(starts[b], starts[b] + counts[b]):
            for c in range(dim):
                v = x[i, c]
                if v < lo[b, c]:
                    lo[b, c] = v
                if v > hi[b, c]:
                    hi[b, c] = v
        if counts[b] == 0:
            for c in range(dim):
                lo[b, c] = 0.0
                hi[b, c] = 0.0
    return lo, hi


@njit(cache=True, nogil=True)
def _cell_of(v, lo, size, dim_size):  # pragma: no cover - compiled
    g = int(math.floor((v - lo) / size))
    if g < 0:
        return 0
    if g >= dim_size:
        return dim_size - 1
    return g


@njit(cache=True, nogil=True)
def _build(x, starts, counts, lo, size, dims, cell0):  # pragma: no cover - compiled
    num_clouds = starts.shape[0]
    dim = x.shape[1]
    total = cell0[num_clouds]
    fill = np.zeros(total + 1, dtype=np.int64)
    num_points = 0
    for b in range(num_clouds):
        num_points += counts[b]
    cell = np.empty(num_points, dtype=np.int64)
    rows = np.empty(num_points, dtype=np.int64)
    p = 0
    for b in range(num_clouds):
        for i in range(starts[b], starts[b] + counts[b]):
            lin = 0
            for c in range(dim):
                lin = lin * dims[b, c] + _cell_of(x[i, c], lo[b, c], size[b], dims[b, c])
            cell[p] = cell0[b] + lin
            rows[p] = i
            fill[cell[p] + 1] += 1
            p += 1
    for c in range(total):
        fill[c + 1] += fill[c]
    cell_start = fill.copy()
    order = np.empty(num_points, dtype=np.int64)
    for p in range(num_points):  # rows ascend, so each cell's rows stay ascending
        order[fill[cell[p]]] = rows[p]
        fill[cell[p]] += 1
    return cell_start, order


#: Cells per cloud are capped at this many per point (sparse or elongated clouds).
_MAX_CELLS_PER_POINT = 4

#: Points per occupied cell for kNN, as a fraction of k.
_KNN_CELL_LOAD = 0.25


def build_grid(x: np.ndarray, starts, counts, size: np.ndarray) -> CellGrid:
    """Sort the points of every cloud (rows ``starts[b] .. starts[b] + counts[b]`` of
    ``x: [N, D]``) into cells of edge ``size[b]`` (at least; enlarged where the grid would
    exceed ``_MAX_CELLS_PER_POINT`` cells per point)."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    lo, hi = _bounds(x, starts, counts)
    extent = hi - lo
    size = np.asarray(size, dtype=np.float64).copy()
    dim = x.shape[1]
    cap = np.maximum(_MAX_CELLS_PER_POINT * counts, 1).astype(np.float64)
    for _ in range(4):
        dims = np.floor(extent / size[:, None]).astype(np.int64) + 1
        cells = np.prod(dims.astype(np.float64), axis=1)
        over = cells > cap
        if not over.any():
            break
        size[over] *= (cells[over] / cap[over]) ** (1.0 / dim) * 1.01
    dims = np.floor(extent / size[:, None]).astype(np.int64) + 1
    cell0 = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.prod(dims, axis=1), out=cell0[1:])
    cell_start, order = _build(x, starts, counts, lo, size, dims, cell0)
    return CellGrid(lo, size, dims, cell0, cell_start, order, np.ascontiguousarray(x[order]))


@njit(cache=True, nogil=True)
def _query_keys(queries, q_cloud, lo, size, dims, cell0):  # pragma: no cover - compiled
    keys = np.empty(queries.shape[0], dtype=np.int64)
    for qi in range(queries.shape[0]):
        b = q_cloud[qi]
        lin = 0
        for c in range(queries.shape[1]):
            lin = lin * dims[b, c] + _cell_of(queries[qi, c], lo[b, c], size[b], dims[b, c])
        keys[qi] = cell0[b] + lin
    return keys


def _same_points(x: np.ndarray, queries: np.ndarray) -> bool:
    """Whether ``queries`` is the very array ``x`` (same memory, shape and strides)."""
    return (
        queries.shape == x.shape
        and queries.strides == x.strides
        and queries.__array_interface__["data"][0] == x.__array_interface__["data"][0]
    )


def query_order(
    grid: CellGrid, queries: np.ndarray, q_cloud: np.ndarray, same: bool = False
) -> np.ndarray:
    """Queries sorted by the cell they fall in (``[Q]`` int64), so that queries handled
    one after another read the same cells from cache. ``same``: the queries are the grid's
    own points (rows ``0 .. Q``), whose cell order the grid already holds."""
    if same and grid.order.shape[0] == queries.shape[0]:
        return grid.order
    keys = _query_keys(queries, q_cloud, grid.lo, grid.size, grid.dims, grid.cell0)
    return np.argsort(keys, kind="stable")


def knn_grid_for(x: np.ndarray, starts, counts, k: int) -> CellGrid:
    """A cell grid for kNN: about ``k * _KNN_CELL_LOAD`` points per occupied cell.

    The first guess spreads the points evenly over the bounding box's non-flat axes; for
    points on surfaces or curves (far fuller cells than planned) the grid is rebuilt once
    with cells sized from the measured occupancy.
    """
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    lo, hi = _bounds(x, starts, counts)
    extent = hi - lo
    target = max(1.0, k * _KNN_CELL_LOAD)
    longest = extent.max(axis=1, initial=0.0)
    flat = extent <= 1e-6 * np.maximum(longest, 1e-300)[:, None]
    eff_dim = np.maximum((~flat).sum(axis=1), 1)
    volume = np.prod(np.where(flat, 1.0, extent), axis=1)
    n = np.maximum(counts, 1).astype(np.float64)
    size = np.where(longest > 0, (volume * target / n) ** (1.0 / eff_dim), 1.0)
    grid = build_grid(x, starts, counts, size)
    occupied = _occupied_per_cloud(grid.cell_start, grid.cell0)
    load = n / np.maximum(occupied, 1)
    dense = (load > 2 * target) & (longest > 0)
    if not dense.any():
        return grid
    # Points on a lower-dimensional set: cell occupancy grows like size ** 2 or less.
    return build_grid(x, starts, counts, np.where(dense, size * np.sqrt(target / load), size))


@njit(cache=True, nogil=True)
def _occupied_per_cloud(cell_start, cell0):  # pragma: no cover - compiled
    num_clouds = cell0.shape[0] - 1
    out = np.zeros(num_clouds, dtype=np.float64)
    for b in range(num_clouds):
        for c in range(cell0[b], cell0[b + 1]):
            if cell_start[c + 1] > cell_start[c]:
                out[b] += 1.0
    return out


# ---------------------------------------------------------------------------------------
# Shell traversal
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _query_cell(q, lo, size, dims, cq):  # pragma: no cover - compiled
    """Integer cell of query ``q`` (unclamped, may lie outside the grid) and the Chebyshev
    shell at which the grid starts."""
    first = 0
    for c in range(q.shape[0]):
        g = math.floor((q[c] - lo[c]) / size)
        g = max(min(g, 1e15), -1e15)
        cq[c] = np.int64(g)
        gap = max(-cq[c], cq[c] - (dims[c] - 1))
        if gap > first:
            first = gap
    return first


@njit(cache=True, nogil=True)
def _outside_gap(q, lo, size, cq, s):  # pragma: no cover - compiled
    """Distance from ``q`` to the outside of the cell block within Chebyshev radius ``s``."""
    gap = np.inf
    for c in range(q.shape[0]):
        low = lo[c] + (cq[c] - s) * size
        high = lo[c] + (cq[c] + s + 1) * size
        gap = min(gap, q[c] - low, high - q[c])
    return max(gap, 0.0)


@njit(cache=True, nogil=True)
def _covers_grid(cq, s, dims):  # pragma: no cover - compiled
    for c in range(cq.shape[0]):  # noqa: SIM110 - generators do not compile
        if cq[c] - s > 0 or cq[c] + s < dims[c] - 1:
            return False
    return True


@njit(cache=True, nogil=True)
def _block_runs(cq, s, dims, base, cell_start, runs):  # pragma: no cover - compiled
    """Like :func:`_shell_runs` for every in-grid cell within Chebyshev distance ``s``."""
    dim = cq.shape[0]
    m = 0
    last = dims[dim - 1]
    lo_t = max(cq[dim - 1] - s, 0)
    hi_t = min(cq[dim - 1] + s, last - 1)
    if lo_t > hi_t:
        return 0
    for i in range(max(cq[0] - s, 0), min(cq[0] + s, dims[0] - 1) + 1):
        if dim == 2:
            row = base + i * last
            runs[m, 0] = cell_start[row + lo_t]
            runs[m, 1] = cell_start[row + hi_t + 1]
            m += 1
            continue
        for j in range(max(cq[1] - s, 0), min(cq[1] + s, dims[1] - 1) + 1):
            row = base + (i * dims[1] + j) * last
            runs[m, 0] = cell_start[row + lo_t]
            runs[m, 1] = cell_start[row + hi_t + 1]
            m += 1
    return m


@njit(cache=True, nogil=True)
def _shell_runs(cq, s, dims, base, cell_start, runs):  # pragma: no cover - compiled
    """Fill ``runs [R, 2]`` with the point ranges of the in-grid cells at Chebyshev distance
    exactly ``s`` from cell ``cq`` (2-D or 3-D; cells of cloud start at ``base``). Cells
    adjacent along the last axis are consecutive in memory, so they form one run.
    Returns the number of runs."""
    dim = cq.shape[0]
    m = 0
    last = dims[dim - 1]
    lo_t = max(cq[dim - 1] - s, 0)
    hi_t = min(cq[dim - 1] + s, last - 1)
    if lo_t > hi_t:
        return 0
    if dim == 2:
        for i in range(max(cq[0] - s, 0), min(cq[0] + s, dims[0] - 1) + 1):
            row = base + i * last
            if abs(i - cq[0]) == s:
                runs[m, 0] = cell_start[row + lo_t]
                runs[m, 1] = cell_start[row + hi_t + 1]
                m += 1
            else:
                for t in (cq[1] - s, cq[1] + s):
                    if 0 <= t < last:
                        runs[m, 0] = cell_start[row + t]
                        runs[m, 1] = cell_start[row + t + 1]
                        m += 1
        return m
    for i in range(max(cq[0] - s, 0), min(cq[0] + s, dims[0] - 1) + 1):
        edge_i = abs(i - cq[0]) == s
        for j in range(max(cq[1] - s, 0), min(cq[1] + s, dims[1] - 1) + 1):
            row = base + (i * dims[1] + j) * last
            if edge_i or abs(j - cq[1]) == s:
                runs[m, 0] = cell_start[row + lo_t]
                runs[m, 1] = cell_start[row + hi_t + 1]
                m += 1
            elif s > 0:
                for t in (cq[2] - s, cq[2] + s):
                    if 0 <= t < last:
                        runs[m, 0] = cell_start[row + t]
                        runs[m, 1] = cell_start[row + t + 1]
                        m += 1
    return m


@njit(cache=True, nogil=True)
def _shell_capacity(cq, s, dims):  # pragma: no cover - compiled
    """Room :func:`_shell_runs` needs for shell ``s``: at most two runs per in-grid row of
    cells along the last axis. Clipped to the grid, so it never exceeds twice the cloud's
    cells however far the query lies outside (cells are capped per point)."""
    rows = 1
    for c in range(cq.shape[0] - 1):
        rows *= max(min(cq[c] + s, dims[c] - 1) - max(cq[c] - s, 0) + 1, 0)
    return 2 * rows + 8


# ---------------------------------------------------------------------------------------
# kNN
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _dist_to(pts, p, q0, q1, q2, dim):  # pragma: no cover - compiled
    """Squared distance of ``pts[p]`` to the query ``(q0, q1[, q2])``, in pts' dtype, by the
    plain formula; query coordinates are hoisted into scalars by the callers."""
    diff = pts[p, 0] - q0
    d = diff * diff
    diff = pts[p, 1] - q1
    d += diff * diff
    if dim == 3:
        diff = pts[p, 2] - q2
        d += diff * diff
    return d


#: Queries per parallel task of the grid kernels (each task allocates its scratch once).
_CHUNK = 256


def _chunk_flags(num_q: int) -> np.ndarray:
    """One completion flag per parallel task of :data:`_CHUNK` queries, all unset."""
    return np.zeros((num_q + _CHUNK - 1) // _CHUNK, dtype=np.uint8)


def _check_done(done: np.ndarray, what: str) -> None:
    """Raise if a parallel task stopped early. An error inside a numba ``prange`` body (a
    failed allocation, for one) may end that task without reaching the caller; each task
    sets its flag as its last statement, so a missing flag is such an error made loud."""
    missing = np.flatnonzero(done == 0)
    if missing.size:
        raise RuntimeError(
            f"the numba {what} kernel stopped early in {missing.size} of {done.size} query "
            f"blocks (first: queries {missing[0] * _CHUNK} .. {(missing[0] + 1) * _CHUNK - 1}); "
            "its results are incomplete"
        )


@njit(parallel=True, cache=True, nogil=True)
def _knn(
    pts,
    queries,
    q_order,
    q_cloud,
    q_own,
    lo,
    size,
    dims,
    cell0,
    cell_start,
    order,
    k,
    out_d,
    out_i,
    done,
):  # pragma: no cover - compiled
    dim = pts.shape[1]
    num_q = queries.shape[0]
    for chunk in prange((num_q + _CHUNK - 1) // _CHUNK):
        cq = np.empty(dim, dtype=np.int64)
        runs = np.empty((2 * dim * 7 ** (dim - 1) + 8, 2), dtype=np.int64)
        for t0 in range(chunk * _CHUNK, min(num_q, (chunk + 1) * _CHUNK)):
            qi = q_order[t0]
            q = queries[qi]
            q0 = q[0]
            q1 = q[1]
            q2 = q[2] if dim == 3 else q[1]
            b = q_cloud[qi]
            own = q_own[qi]
            best_d = out_d[qi]
            best_i = out_i[qi]
            for t in range(k):
                best_d[t] = np.inf
                best_i[t] = -1
            found = 0
            worst = np.inf  # the k-th best distance once k are found: a cheap first test
            s = _query_cell(q, lo[b], size[b], dims[b], cq)
            if s <= 1:  # start with the 3x3(x3) block around the query's cell
                s = 1
                m = _block_runs(cq, 1, dims[b], cell0[b], cell_start, runs)
            else:  # the query lies outside the grid: start at the first shell that meets it
                need = _shell_capacity(cq, s, dims[b])
                if need > runs.shape[0]:
                    runs = np.empty((need, 2), dtype=np.int64)
                m = _shell_runs(cq, s, dims[b], cell0[b], cell_start, runs)
            while True:
                for ri in range(m):
                    for p in range(runs[ri, 0], runs[ri, 1]):
                        d = _dist_to(pts, p, q0, q1, q2, dim)
                        if d > worst:
                            continue
                        j = order[p]
                        if j == own or (d == worst and found == k and j > best_i[k - 1]):
                            continue
                        t = found if found < k else k - 1
                        if found < k:
                            found += 1
                        while t > 0 and (
                            best_d[t - 1] > d or (best_d[t - 1] == d and best_i[t - 1] > j)
                        ):
                            best_d[t] = best_d[t - 1]
                            best_i[t] = best_i[t - 1]
                            t -= 1
                        best_d[t] = d
                        best_i[t] = j
                        if found == k:
                            worst = best_d[k - 1]
                if _covers_grid(cq, s, dims[b]):
                    break
                if found == k:
                    gap = _outside_gap(q, lo[b], size[b], cq, s) * (1.0 - _BOUND_MARGIN)
                    if gap * gap > best_d[k - 1] * (1.0 + _BOUND_MARGIN):
                        break
                s += 1
                need = _shell_capacity(cq, s, dims[b])
                if need > runs.shape[0]:
                    runs = np.empty((need, 2), dtype=np.int64)
                m = _shell_runs(cq, s, dims[b], cell0[b], cell_start, runs)
        done[chunk] = 1


def _prepared_queries(grid: CellGrid, x: np.ndarray, queries: np.ndarray, q_cloud: np.ndarray):
    """``(queries, q_order, q_cloud)`` as the grid kernels take them: contiguous queries,
    their cell order, int64 clouds."""
    queries = np.ascontiguousarray(queries)
    q_cloud = q_cloud.astype(np.int64)
    return queries, query_order(grid, queries, q_cloud, _same_points(x, queries)), q_cloud


def knn_grid(
    x: np.ndarray,
    x_starts,
    x_counts,
    queries: np.ndarray,
    q_cloud: np.ndarray,
    q_own: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``x`` for every query, in (distance, index) order.

    Args:
        x: ``[N, D]`` points (D = 2 or 3), float32 or float64.
        x_starts, x_counts: cloud ``b`` is rows ``x_starts[b] .. + x_counts[b]`` of ``x``.
        queries: ``[Q, D]`` query points, same dtype.
        q_cloud: ``[Q]`` int64 cloud of each query.
        q_own: ``[Q]`` int64 row of ``x`` to leave out per query (its own point), or None.
        k: neighbours per query; every cloud must hold enough points.

    Returns:
        ``(dist2 [Q, k], idx [Q, k])``: squared distances in ``x``'s dtype and int64 rows.
    """
    grid = knn_grid_for(x, x_starts, x_counts, k)
    num_q = queries.shape[0]
    own = np.full(num_q, -1, dtype=np.int64) if q_own is None else q_own.astype(np.int64)
    out_d = np.empty((num_q, k), dtype=x.dtype)
    out_i = np.empty((num_q, k), dtype=np.int64)
    done = _chunk_flags(num_q)
    queries, q_order, q_cloud = _prepared_queries(grid, x, queries, q_cloud)
    with _LOCK:
        numba.set_num_threads(_threads())
        _knn(
            grid.points,
            queries,
            q_order,
            q_cloud,
            own,
            grid.lo,
            grid.size,
            grid.dims,
            grid.cell0,
            grid.cell_start,
            grid.order,
            k,
            out_d,
            out_i,
            done,
        )
    _check_done(done, "kNN")
    return out_d, out_i


# ---------------------------------------------------------------------------------------
# Radius
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _axis_range(v, reach, lo, size, n):  # pragma: no cover - compiled
    """Cells ``[first, last]`` along one axis that meet ``[v - reach, v + reach]``."""
    first = max(int(math.floor((v - reach - lo) / size)), 0)
    last = min(int(math.floor((v + reach - lo) / size)), n - 1)
    return first, last


@njit(cache=True, nogil=True)
def _box_gap(v, g, lo, size):  # pragma: no cover - compiled
    """Distance along one axis from ``v`` to cell ``g``'s extent (0 inside)."""
    low = lo + g * size
    return max(low - v, 0.0, v - (low + size))


@njit(cache=True, nogil=True)
def _ball_runs(q, reach, lo, size, dims, base, cell_start, runs):  # pragma: no cover - compiled
    """Point ranges of the cells that meet the ball of radius ``reach`` around ``q`` (2-D
    or 3-D): per row of cells along the last axis, the span the ball covers in that row."""
    dim = q.shape[0]
    last = dims[dim - 1]
    reach2 = reach * reach
    m = 0
    i0, i1 = _axis_range(q[0], reach, lo[0], size, dims[0])
    for i in range(i0, i1 + 1):
        gx = _box_gap(q[0], i, lo[0], size)
        if dim == 2:
            rem = reach2 - gx * gx
            if rem < 0:
                continue
            t0, t1 = _axis_range(q[1], math.sqrt(rem), lo[1], size, last)
            if t0 <= t1:
                row = base + i * last
                runs[m, 0] = cell_start[row + t0]
                runs[m, 1] = cell_start[row + t1 + 1]
                m += 1
            continue
        j0, j1 = _axis_range(q[1], math.sqrt(max(reach2 - gx * gx, 0.0)), lo[1], size, dims[1])
        for j in range(j0, j1 + 1):
            gy = _box_gap(q[1], j, lo[1], size)
            rem = reach2 - gx * gx - gy * gy
            if rem < 0:
                continue
            t0, t1 = _axis_range(q[2], math.sqrt(rem), lo[2], size, last)
            if t0 <= t1:
                row = base + (i * dims[1] + j) * last
                runs[m, 0] = cell_start[row + t0]
                runs[m, 1] = cell_start[row + t1 + 1]
                m += 1
    return m


#: Up to this many neighbours per query, radius search gives every query ``k`` slots at
#: once; above it, slots are sized by a counting pass.
_FIXED_SLOTS = 64


@njit(parallel=True, cache=True, nogil=True)
def _radius_room(
    queries, q_order, q_cloud, lo, size, dims, cell0, cell_start, reach, max_runs, k, room, done
):  # pragma: no cover - compiled
    """``room[qi]``: the candidates in the cells that meet query ``qi``'s ball, capped at
    ``k`` - an upper bound on its edges that costs no distance."""
    num_q = queries.shape[0]
    for chunk in prange((num_q + _CHUNK - 1) // _CHUNK):
        runs = np.empty((max_runs, 2), dtype=np.int64)
        for t0 in range(chunk * _CHUNK, min(num_q, (chunk + 1) * _CHUNK)):
            qi = q_order[t0]
            b = q_cloud[qi]
            m = _ball_runs(queries[qi], reach, lo[b], size[b], dims[b], cell0[b], cell_start, runs)
            total = 0
            for ri in range(m):
                total += runs[ri, 1] - runs[ri, 0]
            room[qi] = min(total, k)
        done[chunk] = 1


@njit(parallel=True, cache=True, nogil=True)
def _radius(
    pts,
    queries,
    q_order,
    q_cloud,
    lo,
    size,
    dims,
    cell0,
    cell_start,
    order,
    r2,
    reach,
    max_runs,
    k,
    ptr,
    found_i,
    out_n,
    done,
):  # pragma: no cover - compiled
    dim = pts.shape[1]
    num_q = queries.shape[0]
    for chunk in prange((num_q + _CHUNK - 1) // _CHUNK):
        runs = np.empty((max_runs, 2), dtype=np.int64)
        for t0 in range(chunk * _CHUNK, min(num_q, (chunk + 1) * _CHUNK)):
            qi = q_order[t0]
            q = queries[qi]
            q0 = q[0]
            q1 = q[1]
            q2 = q[2] if dim == 3 else q[1]
            b = q_cloud[qi]
            m = _ball_runs(q, reach, lo[b], size[b], dims[b], cell0[b], cell_start, runs)
            keep = found_i[ptr[qi] : ptr[qi + 1]]
            found = 0
            total = 0
            for ri in range(m):
                total += runs[ri, 1] - runs[ri, 0]
            if _FIXED_SLOTS < total <= keep.shape[0]:
                # Many candidates, all fit: collect, then sort once (insertion below would
                # cost total^2).
                for ri in range(m):
                    for p in range(runs[ri, 0], runs[ri, 1]):
                        if _dist_to(pts, p, q0, q1, q2, dim) < r2:
                            keep[found] = order[p]
                            found += 1
                keep[:found].sort()
                out_n[qi] = found
                continue
            # Few candidates, or more than k: keep the k lowest rows, ascending, by insertion.
            for ri in range(m):
                for p in range(runs[ri, 0], runs[ri, 1]):
                    if not _dist_to(pts, p, q0, q1, q2, dim) < r2:
                        continue
                    j = order[p]
                    if found == k and j > keep[k - 1]:
                        continue
                    t = found if found < k else k - 1
                    if found < k:
                        found += 1
                    while t > 0 and keep[t - 1] > j:
                        keep[t] = keep[t - 1]
                        t -= 1
                    keep[t] = j
            out_n[qi] = found
        done[chunk] = 1


def radius_grid(
    x: np.ndarray,
    x_starts,
    x_counts,
    queries: np.ndarray,
    q_cloud: np.ndarray,
    r: float,
    k: int,
) -> np.ndarray:
    """For every query, the (at most ``k``) lowest rows of ``x`` in its cloud with squared
    distance ``< r^2`` (``r^2`` rounded once to ``x``'s dtype).

    Memory follows the neighbourhoods, not ``k``: up to :data:`_FIXED_SLOTS` neighbours
    every query gets ``k`` slots; beyond, a first pass sizes each query's slots by the
    points in the cells its ball meets (at most ``k``), so ``k = 10**9`` ("keep all") costs
    no more than the candidates.

    Returns ``[2, E]`` int64 (query index, ``x`` row), grouped by query, rows ascending
    within a query.
    """
    counts = np.asarray(x_counts, dtype=np.int64)
    # Cells of half the radius, and per query only the cells that meet its ball, so that few
    # candidates lie outside it. The reach has a margin against rounding: the distance test
    # itself decides.
    grid = build_grid(x, x_starts, counts, np.full(len(counts), r / 2))
    reach = r * (1.0 + 1e-5)
    span = int(math.ceil(2 * reach / float(grid.size.min()))) + 2
    max_runs = span ** (x.shape[1] - 1)
    num_q = queries.shape[0]
    room = np.zeros(num_q if k > _FIXED_SLOTS else 0, dtype=np.int64)
    out_n = np.zeros(num_q, dtype=np.int64)
    r2 = np.asarray(r * r, dtype=x.dtype).item()
    queries, q_order, q_cloud = _prepared_queries(grid, x, queries, q_cloud)
    with _LOCK:
        numba.set_num_threads(_threads())
        if k <= _FIXED_SLOTS:
            slot = np.arange(num_q + 1, dtype=np.int64) * k
        else:
            done = _chunk_flags(num_q)
            _radius_room(
                queries,
                q_order,
                q_cloud,
                grid.lo,
                grid.size,
                grid.dims,
                grid.cell0,
                grid.cell_start,
                reach,
                max_runs,
                k,
                room,
                done,
            )
            _check_done(done, "radius")
            slot = np.zeros(num_q + 1, dtype=np.int64)
            np.cumsum(room, out=slot[1:])
        found_i = np.empty(int(slot[-1]), dtype=np.int64)
        done = _chunk_flags(num_q)
        _radius(
            grid.points,
            queries,
            q_order,
            q_cloud,
            grid.lo,
            grid.size,
            grid.dims,
            grid.cell0,
            grid.cell_start,
            grid.order,
            r2,
            reach,
            max_runs,
            k,
            slot,
            found_i,
            out_n,
            done,
        )
        _check_done(done, "radius")
        ptr = np.zeros(num_q + 1, dtype=np.int64)
        np.cumsum(out_n, out=ptr[1:])
        edges = np.empty((2, int(ptr[-1])), dtype=np.int64)
        done = _chunk_flags(num_q)
        _compact(found_i, slot, out_n, ptr, edges, done)
        _check_done(done, "radius")
    return edges


@njit(parallel=True, cache=True, nogil=True)
def _compact(found_i, slot, out_n, ptr, edges, done):  # pragma: no cover - compiled
    num_q = out_n.shape[0]
    for chunk in prange((num_q + _CHUNK - 1) // _CHUNK):
        for qi in range(chunk * _CHUNK, min(num_q, (chunk + 1) * _CHUNK)):
            for t in range(out_n[qi]):
                edges[0, ptr[qi] + t] = qi
                edges[1, ptr[qi] + t] = found_i[slot[qi] + t]
        done[chunk] = 1
