"""Compiled exact farthest point sampling for the ``"numba"`` backend.

Both kernels give the sequence of the plain loop bit for bit: the first sample is the given
start, each next sample the point with the largest squared distance to the samples so far,
ties to the lowest index, distances accumulated coordinate by coordinate from direct
differences in the input dtype, ``((p0 - q0)^2 + (p1 - q1)^2) + ...``.

* :func:`_fps_plain` - the O(N x samples) loop over coordinate planes (it vectorises). Used
  when points x samples is below :data:`TREE_MIN_WORK`.
* :func:`_fps_tree` - the same loop over a KD-tree. A node of more than a leaf's worth of
  points is cut at the middle of the widest sides of its bounding box (up to three sides in
  one counting-sort pass), down to leaves of at most :data:`LEAF_SIZE` points; every node keeps its
  bounding box and the largest running distance inside it, with the lowest index holding
  it. A new sample is only handed to leaves whose box is closer to it than that largest
  distance, since no other point's distance can shrink, and a leaf applies the samples it
  holds only once it holds the root's maximum (or :data:`_PENDING` of them). Skipping never
  changes a distance, and a held-back sample only lowers a leaf below its stored maximum,
  so the up-to-date leaf at the root is the plain loop's next sample, ties included. The
  box test is made conservative against rounding (a relative margin of 1e-4 and an
  absolute one of a few smallest normal numbers), far above the error of either distance.

The tree is the idea of QuickFPS (Han et al., 2023), written here for an exact, given start.
Clouds run in parallel on ``torch.get_num_threads()`` threads (small calls on one thread).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ._numba_kernels import _LOCK, _threads

#: A cloud runs the KD-tree loop when its points x samples reach this (below, the plain
#: loop). Measured on uniform clouds of 512 to 16,384 points and 1/16 to 1/2 of them as
#: samples, one thread: the two loops break even between 0.5 M and 1.05 M (1,024 -> 512:
#: plain 0.38 ms, tree 0.41 ms; 2,048 -> 512: plain 0.79 ms, tree 0.64 ms).
TREE_MIN_WORK = 800_000

#: Points per KD-tree leaf (at most, short of equal points): the fastest of 32/64/128/256
#: measured on 4,096 -> 1,024 to 200,000 -> 4,096 samples.
LEAF_SIZE = 128

#: The box bound is shrunk by this factor before a node is skipped.
_SHRINK = 1.0 - 1e-4


# ---------------------------------------------------------------------------------------
# The plain loop
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _fps_plain(pts, start, steps, out):  # pragma: no cover - compiled
    """Plain FPS of ``pts: [D, n]`` (coordinate planes) into ``out[:steps]``."""
    dim, n = pts.shape
    mind = np.full(n, np.inf, dtype=pts.dtype)
    step = np.empty(n, dtype=pts.dtype)
    cur = start
    for s in range(steps):
        out[s] = cur
        if s + 1 == steps:
            break
        q = pts[0, cur]
        for i in range(n):
            diff = pts[0, i] - q
            step[i] = diff * diff
        for c in range(1, dim):
            q = pts[c, cur]
            for i in range(n):
                diff = pts[c, i] - q
                step[i] += diff * diff
        for i in range(n):
            mind[i] = min(mind[i], step[i])
        best = mind[0]
        arg = 0
        for i in range(1, n):
            if mind[i] > best:
                best = mind[i]
                arg = i
        cur = arg


# ---------------------------------------------------------------------------------------
# The KD-tree loop
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _box_of(work, lo, hi, box_lo, box_hi, node):  # pragma: no cover - compiled
    """Bounding box of points ``lo .. hi`` of ``work: [D, n]`` into row ``node``."""
    for c in range(work.shape[0]):
        vmin = work[c, lo]
        vmax = vmin
        for p in range(lo + 1, hi):
            v = work[c, p]
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        box_lo[node, c] = vmin
        box_hi[node, c] = vmax


@njit(cache=True, nogil=True)
def _grown(arr, size):  # pragma: no cover - compiled
    out = np.empty((size,) + arr.shape[1:], dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


@njit(cache=True, nogil=True)
def _split_axes(box_lo, box_hi, node, axes):  # pragma: no cover - compiled
    """The (at most ``len(axes)``) widest sides of ``node``'s box into ``axes``, widest
    first; returns how many have a positive extent."""
    dim = box_lo.shape[1]
    used = 0
    for t in range(axes.shape[0]):
        best = -1
        width = 0.0
        for c in range(dim):
            taken = False
            for u in range(t):
                if axes[u] == c:
                    taken = True
            extent = np.float64(box_hi[node, c]) - np.float64(box_lo[node, c])
            if not taken and (best < 0 or extent > width):
                best = c
                width = extent
        axes[t] = best
        if width > 0:
            used += 1
    return used


@njit(cache=True, nogil=True)
def _build_tree(pts, leaf_size):  # pragma: no cover - compiled
    """KD-tree of ``pts: [D, n]``. A node of more than ``leaf_size`` points is cut at the
    middle of the widest sides of its bounding box, up to three sides in one counting-sort
    pass over its points (at most 8 parts: the widest side's cut first, then the next one's
    in each half, ...; a cut that would leave a side empty is not made, and a part of at
    most ``leaf_size`` points is not cut further). A node whose middle cuts all leave a side
    empty (rounding on a tiny extent) is cut at the median of its widest side; a node of
    equal points stays a leaf. Node 0 is the root; an internal node's children are
    ``child[i]`` and ``child[i] + 1``, numbered after their parent; a leaf has
    ``child[i] = -1``.

    Returns ``(work, idx, start, stop, child, box_lo, box_hi, depth)``: the points in tree
    order ``[D, n]``, their original indices, every node's range of points, children and
    bounding box (in the points' dtype), and the depth of the tree.
    """
    dim, n = pts.shape
    work = np.empty((dim, n), dtype=pts.dtype)
    for c in range(dim):
        for p in range(n):
            work[c, p] = pts[c, p]
    idx = np.arange(n)
    spare = np.empty((dim, n), dtype=pts.dtype)
    spare_idx = np.empty(n, dtype=np.int64)
    part = np.empty(n, dtype=np.int64)
    ways = min(dim, 3)
    parts = 1 << ways
    axes = np.empty(ways, dtype=np.int64)
    mid = np.empty(ways, dtype=pts.dtype)
    sizes = np.empty(parts + 1, dtype=np.int64)
    fill = np.empty(parts, dtype=np.int64)
    part_lo = np.empty((parts, dim), dtype=pts.dtype)
    part_hi = np.empty((parts, dim), dtype=pts.dtype)
    todo = np.empty((2 * parts, 3), dtype=np.int64)  # (node, first part, last part + 1)
    cap = max(16, 4 * (n // max(leaf_size, 1)) + 4)
    start = np.empty(cap, dtype=np.int64)
    stop = np.empty(cap, dtype=np.int64)
    child = np.full(cap, -2, dtype=np.int64)  # -2: not decided yet
    level = np.empty(cap, dtype=np.int64)
    box_lo = np.empty((cap, dim), dtype=pts.dtype)
    box_hi = np.empty((cap, dim), dtype=pts.dtype)
    start[0] = 0
    stop[0] = n
    level[0] = 0
    _box_of(work, 0, n, box_lo, box_hi, 0)
    count = 1
    depth = 0
    node = 0
    while node < count:  # parents before children
        if child[node] != -2:  # cut already, by its parent's pass
            node += 1
            continue
        lo = start[node]
        hi = stop[node]
        child[node] = -1
        depth = max(depth, level[node])
        if hi - lo <= leaf_size or _split_axes(box_lo, box_hi, node, axes) == 0:
            node += 1
            continue
        if count + 2 * parts > cap:
            cap = 2 * cap + 2 * parts
            start = _grown(start, cap)
            stop = _grown(stop, cap)
            child = _grown(child, cap)
            child[count:] = -2
            level = _grown(level, cap)
            box_lo = _grown(box_lo, cap)
            box_hi = _grown(box_hi, cap)
        for t in range(ways):
            a = axes[t]
            mid[t] = box_lo[node, a] + (box_hi[node, a] - box_lo[node, a]) / 2
        sizes[:] = 0
        part_lo[:] = np.inf
        part_hi[:] = -np.inf
        for p in range(lo, hi):  # which part, the parts' sizes and boxes
            k = 0
            for t in range(ways):
                k = 2 * k + (0 if work[axes[t], p] < mid[t] else 1)
            part[p] = k
            sizes[k + 1] += 1
            for c in range(dim):
                v = work[c, p]
                part_lo[k, c] = min(part_lo[k, c], v)
                part_hi[k, c] = max(part_hi[k, c], v)
        if sizes.max() == hi - lo:  # rounding put every point in one part: median cut
            axis = axes[0]
            cut = (lo + hi) // 2
            order = np.argsort(work[axis, lo:hi], kind="mergesort")
            idx[lo:hi] = idx[lo:hi][order]
            for c in range(dim):
                work[c, lo:hi] = work[c, lo:hi][order]
            child[node] = count
            for t, (a, b) in enumerate(((lo, cut), (cut, hi))):
                start[count + t] = a
                stop[count + t] = b
                level[count + t] = level[node] + 1
                _box_of(work, a, b, box_lo, box_hi, count + t)
            count += 2
            node += 1
            continue
        for k in range(parts):  # counting sort of the points by part
            sizes[k + 1] += sizes[k]
            fill[k] = lo + sizes[k]
        for p in range(lo, hi):
            q = fill[part[p]]
            fill[part[p]] = q + 1
            for c in range(dim):
                spare[c, q] = work[c, p]
            spare_idx[q] = idx[p]
        for c in range(dim):
            work[c, lo:hi] = spare[c, lo:hi]
        idx[lo:hi] = spare_idx[lo:hi]
        # the binary cuts inside the pass: node over parts [0, parts), halves by the
        # widest side's bit first
        todo[0, 0] = node
        todo[0, 1] = 0
        todo[0, 2] = parts
        pending = 1
        while pending > 0:
            pending -= 1
            v = todo[pending, 0]
            k0 = todo[pending, 1]
            k1 = todo[pending, 2]
            while True:
                if k1 - k0 == 1:  # one part: cut again by a pass of its own, if needed
                    if v != node:
                        child[v] = -2
                    break
                half = (k0 + k1) // 2
                left = sizes[half] - sizes[k0]
                right = sizes[k1] - sizes[half]
                if left == 0:
                    k0 = half
                    continue
                if right == 0:
                    k1 = half
                    continue
                child[v] = count
                depth = max(depth, level[v] + 1)
                for t, (a, b) in enumerate(((k0, half), (half, k1))):
                    w = count + t
                    start[w] = lo + sizes[a]
                    stop[w] = lo + sizes[b]
                    level[w] = level[v] + 1
                    for c in range(dim):
                        box_lo[w, c] = part_lo[a:b, c].min()
                        box_hi[w, c] = part_hi[a:b, c].max()
                    if stop[w] - start[w] <= leaf_size:
                        child[w] = -1
                    else:
                        todo[pending, 0] = w
                        todo[pending, 1] = a
                        todo[pending, 2] = b
                        pending += 1
                count += 2
                break
        node += 1
    return (
        work,
        idx,
        start[:count],
        stop[:count],
        child[:count],
        box_lo[:count],
        box_hi[:count],
        depth,
    )


#: Samples a leaf may hold back before they are applied to its points.
_PENDING = 16


@njit(cache=True, nogil=True, inline="always")
def _box_bound(box_lo, box_hi, node, pts, cur):  # pragma: no cover - compiled
    """Squared distance (float64) from point ``cur`` of ``pts: [D, n]`` to ``node``'s box."""
    bound = 0.0
    for c in range(pts.shape[0]):
        v = np.float64(pts[c, cur])
        gap = max(box_lo[node, c] - v, v - box_hi[node, c], 0.0)
        bound += gap * gap
    return bound


@njit(cache=True, nogil=True)
def _apply(
    leaf,
    pts,
    work,
    idx,
    first,
    last,
    box_lo,
    box_hi,
    pending,
    num_pending,
    mind,
    node_max,
    node_arg,
    tiny,
):  # pragma: no cover - compiled
    """Apply the samples held back by ``leaf`` (latest first; one that cannot lower the
    leaf's largest distance is skipped) and store its exact (largest distance, lowest index
    holding it)."""
    dim = pts.shape[0]
    lo = first[leaf]
    hi = last[leaf]
    top = node_max[leaf]
    arg = node_arg[leaf]
    for t in range(num_pending[leaf] - 1, -1, -1):
        cur = pending[leaf, t]
        if _box_bound(box_lo, box_hi, leaf, pts, cur) * _SHRINK - tiny >= top:
            continue
        q0 = pts[0, cur]
        q1 = pts[1, cur] if dim > 1 else q0
        q2 = pts[2, cur] if dim > 2 else q0
        best = -1.0
        arg = -1
        for p in range(lo, hi):
            diff = work[0, p] - q0
            d = diff * diff
            if dim > 1:
                diff = work[1, p] - q1
                d += diff * diff
            if dim == 3:
                diff = work[2, p] - q2
                d += diff * diff
            elif dim > 3:
                for c in range(2, dim):
                    diff = work[c, p] - pts[c, cur]
                    d += diff * diff
            v = mind[p]
            if d < v:
                mind[p] = d
                v = d
            if v > best or (v == best and idx[p] < arg):
                best = v
                arg = idx[p]
        top = best
    num_pending[leaf] = 0
    node_max[leaf] = top
    node_arg[leaf] = arg


@njit(cache=True, nogil=True)
def _raise(node, parent, child, node_max, node_arg, node_leaf):  # pragma: no cover - compiled
    """Recompute the (largest distance, lowest index, leaf) of ``node``'s ancestors."""
    node = parent[node]
    while node >= 0:
        a = child[node]
        b = a + 1
        if node_max[b] > node_max[a] or (node_max[b] == node_max[a] and node_arg[b] < node_arg[a]):
            a = b
        node_max[node] = node_max[a]
        node_arg[node] = node_arg[a]
        node_leaf[node] = node_leaf[a]
        node = parent[node]


@njit(cache=True, nogil=True)
def _fps_tree(pts, start, steps, leaf_size, tiny, out):  # pragma: no cover - compiled
    """KD-tree-pruned FPS of ``pts: [D, n]`` into ``out[:steps]``, equal to :func:`_fps_plain`.

    A node's (largest distance, lowest index holding it) is an upper bound in that order:
    a leaf holds back up to ``_PENDING`` samples, and is brought up to date only when it
    holds the root's maximum (or its list is full). An up-to-date leaf at the root is the
    exact answer: the others can only have smaller distances, or equal ones at higher
    indices, since distances only shrink.
    """
    n = pts.shape[1]
    work, idx, first, last, child, box_lo, box_hi, depth = _build_tree(pts, leaf_size)
    nodes = first.shape[0]
    parent = np.full(nodes, -1, dtype=np.int64)
    node_max = np.full(nodes, np.inf)
    node_arg = np.empty(nodes, dtype=np.int64)
    node_leaf = np.empty(nodes, dtype=np.int64)
    for node in range(nodes - 1, -1, -1):  # children come after their parent
        if child[node] >= 0:
            parent[child[node]] = node
            parent[child[node] + 1] = node
            a = child[node]
            if node_arg[a + 1] < node_arg[a]:
                a += 1
            node_arg[node] = node_arg[a]
            node_leaf[node] = node_leaf[a]
        else:
            node_arg[node] = idx[first[node] : last[node]].min()
            node_leaf[node] = node
    mind = np.full(n, np.inf, dtype=pts.dtype)
    pending = np.empty((nodes, _PENDING), dtype=np.int64)
    num_pending = np.zeros(nodes, dtype=np.int64)
    stack = np.empty(depth + 2, dtype=np.int64)
    cur = start
    for s in range(steps):
        out[s] = cur
        if s + 1 == steps:
            break
        top = 1
        stack[0] = 0
        while top > 0:  # hand the sample to every leaf whose distances it may lower
            top -= 1
            node = stack[top]
            if _box_bound(box_lo, box_hi, node, pts, cur) * _SHRINK - tiny >= node_max[node]:
                continue
            if child[node] >= 0:
                stack[top] = child[node]
                stack[top + 1] = child[node] + 1
                top += 2
                continue
            if num_pending[node] == _PENDING:
                _apply(
                    node,
                    pts,
                    work,
                    idx,
                    first,
                    last,
                    box_lo,
                    box_hi,
                    pending,
                    num_pending,
                    mind,
                    node_max,
                    node_arg,
                    tiny,
                )
                _raise(node, parent, child, node_max, node_arg, node_leaf)
            pending[node, num_pending[node]] = cur
            num_pending[node] += 1
        while num_pending[node_leaf[0]] > 0:  # bring the leader up to date until it stays
            leaf = node_leaf[0]
            _apply(
                leaf,
                pts,
                work,
                idx,
                first,
                last,
                box_lo,
                box_hi,
                pending,
                num_pending,
                mind,
                node_max,
                node_arg,
                tiny,
            )
            _raise(leaf, parent, child, node_max, node_arg, node_leaf)
        cur = node_arg[0]


@njit(cache=True, nogil=True)
def _one_cloud(b, planes, counts, steps, starts, tree_work, leaf_size, tiny, out, done):
    # pragma: no cover - compiled
    n = counts[b]
    if steps[b] > 0:
        if n * steps[b] >= tree_work:  # (the tree copies the points in its order)
            _fps_tree(planes[b, :, :n], starts[b], steps[b], leaf_size, tiny, out[b])
        else:  # a unit-stride copy: the plain loop vectorises on it (2x faster)
            pts = np.ascontiguousarray(planes[b, :, :n])
            _fps_plain(pts, starts[b], steps[b], out[b])
    done[b] = 1


@njit(parallel=True, cache=True, nogil=True)
def _fps_clouds(planes, counts, steps, starts, tree_work, leaf_size, tiny, out, done):
    # pragma: no cover - compiled
    for b in prange(planes.shape[0]):
        _one_cloud(b, planes, counts, steps, starts, tree_work, leaf_size, tiny, out, done)


@njit(cache=True, nogil=True)
def _fps_clouds_serial(planes, counts, steps, starts, tree_work, leaf_size, tiny, out, done):
    """:func:`_fps_clouds` on the calling thread alone: a call below
    :data:`PARALLEL_MIN_WORK` spends longer starting threads than sampling."""
    # pragma: no cover - compiled
    for b in range(planes.shape[0]):
        _one_cloud(b, planes, counts, steps, starts, tree_work, leaf_size, tiny, out, done)


#: Calls whose points x samples summed over clouds stay below this run on one thread:
#: starting the threads costs more than they save there (measured through ``fps``, 2
#: threads: 8 x 256 -> 64 took 0.15 ms on one thread and 0.28 ms on two, 16 x 512 -> 128
#: 0.82 / 0.99 ms, 16 x 1,024 -> 256 3.4 / 2.5 ms).
PARALLEL_MIN_WORK = 2_000_000


def fps_clouds(
    pad: np.ndarray,
    counts,
    steps,
    starts,
    tree_work: int = TREE_MIN_WORK,
    leaf_size: int = LEAF_SIZE,
) -> np.ndarray:
    """Exact FPS of every cloud of ``pad: [B, N, D]`` (valid in its first ``counts[b]``
    slots), ``steps[b]`` samples from local index ``starts[b]``; returns ``[B, max(steps)]``
    int64 local indices in selection order (entries past ``steps[b]`` are 0).

    Clouds run in parallel (below :data:`PARALLEL_MIN_WORK` on one thread); a cloud whose
    points x samples reach ``tree_work`` runs the KD-tree loop with leaves of ``leaf_size``
    points (default :data:`LEAF_SIZE`), any other the plain loop.
    """
    counts = np.asarray(counts, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    out = np.zeros((pad.shape[0], int(steps.max(initial=0))), dtype=np.int64)
    planes = np.ascontiguousarray(pad.transpose(0, 2, 1))
    done = np.zeros(pad.shape[0], dtype=np.uint8)
    # Absolute margin of the box test: covers the error of distances in the subnormal range.
    tiny = 4.0 * float(np.finfo(pad.dtype).tiny)
    args = (planes, counts, steps, starts, tree_work, max(int(leaf_size), 1), tiny, out, done)
    if int(counts @ steps) < PARALLEL_MIN_WORK:
        _fps_clouds_serial(*args)
    else:
        with _LOCK:
            numba.set_num_threads(_threads())
            _fps_clouds(*args)
    if not done.all():
        raise RuntimeError(
            f"the numba FPS kernel stopped early on cloud {int(np.flatnonzero(done == 0)[0])}; "
            "its results are incomplete"
        )
    return out
