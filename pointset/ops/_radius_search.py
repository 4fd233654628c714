"""Radius search: the machinery shared by ``radius``, ``ball_query`` and ``nearest``.

Three ideas live here:

* **One distance formula.** Squared distances are direct differences accumulated coordinate
  by coordinate in the input dtype, ``((q0 - p0)^2 + (q1 - p1)^2) + ...`` (the loop of
  torch-cluster's and pytorch3d's kernels), never the expanded ``|q|^2 - 2 q.p + |p|^2``.
  :func:`block_sq_dist` (all pairs of a block) and :func:`pair_sq_dist` (listed pairs) give
  the same bits for the same pair, so every backend can settle boundary cases exactly.
* **Cloud-aligned blocks.** :func:`plan_blocks` cuts packed clouds into chunks whose padded
  ``[C, m, n]`` distance tensor stays under a memory budget: many small clouds are batched
  together, a large cloud is split along its queries.
* **"First k within r".** Every radius backend reduces to candidate pairs; :func:`finalize`
  keeps the pairs with ``d^2 < r^2`` (strict, as torch-cluster), sorted by query and then by
  point index, and the ``k`` lowest point indices of each query.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import check_points, check_same_dim
from ._clouds import Clouds

#: Pairwise distances held at once per block (elements) on CPU; CUDA uses 16x more.
BLOCK_ELEMENTS = 1 << 18


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def check_radius(r: float, name: str = "r") -> float:
    """``r`` as a Python float; it must be a finite number > 0."""
    if isinstance(r, Tensor):
        if r.numel() != 1:
            raise ValueError(
                f"{name} must be a single number, got a tensor of shape {tuple(r.shape)}"
            )
        r = r.item()
    if isinstance(r, bool) or not isinstance(r, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(r).__name__}")
    r = float(r)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {r}")
    return r


def check_count(k: int, name: str) -> int:
    """``k`` must be an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be an int >= 1, got {k!r}")
    return k


def check_pair(
    p: Tensor,
    q: Tensor,
    batch_p: Tensor | None,
    batch_q: Tensor | None,
    names: Sequence[str] = ("x", "y"),
    trusted: bool = False,
) -> tuple[Clouds, Clouds]:
    """Validate a searched set ``p: [N, D]`` and queries ``q: [M, D]`` with their batch
    vectors (``None`` = every point in cloud 0) and return their clouds, as many of each.
    ``trusted`` skips the checks (see :mod:`pointset.ops.prechecked`)."""
    name_p, name_q = names
    label_p = "batch" if name_p == name_q else f"batch_{name_p}"
    if not trusted:
        check_points(p, name_p)
        if q is not p:
            check_points(q, name_q)
        check_same_dim(p, q, name_p, name_q)
        if p.dtype != q.dtype:
            raise ValueError(
                f"{name_p} and {name_q} must have the same dtype, got {p.dtype} and {q.dtype}"
            )
        for name, batch in ((label_p, batch_p), (f"batch_{name_q}", batch_q)):
            if isinstance(batch, Tensor) and batch.device != p.device:
                raise ValueError(f"{name} is on {batch.device} but the points are on {p.device}")
    cp = Clouds.from_batch(batch_p, p.size(0), p.device, label_p, trusted=trusted)
    if batch_q is batch_p and q.size(0) == p.size(0):
        cq = cp
    else:
        cq = Clouds.from_batch(batch_q, q.size(0), p.device, f"batch_{name_q}", trusted=trusted)
    return cp.with_num_clouds(cq.num_clouds), cq.with_num_clouds(cp.num_clouds)


# ---------------------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------------------


def pair_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``[E]`` of the row pairs of ``a: [E, D]`` and ``b: [E, D]``."""
    d = (a[:, 0] - b[:, 0]).square_()
    for c in range(1, a.size(1)):
        d.add_((a[:, c] - b[:, c]).square_())
    return d


def block_sq_dist(
    q: Tensor, p: Tensor, out: Tensor | None = None, work: Tensor | None = None
) -> Tensor:
    """All squared distances ``[C, m, n]`` of coordinate-major blocks ``q: [D, C, m]`` and
    ``p: [D, C, n]`` (bitwise equal to :func:`pair_sq_dist` of the same pairs).

    ``out`` and ``work`` are optional ``[C, m, n]`` buffers of ``q``'s dtype; reusing them
    across blocks avoids allocating (and page-faulting) large tensors per block.
    """
    shape = (q.size(1), q.size(2), p.size(2))
    d = torch.empty(shape, dtype=q.dtype, device=q.device) if out is None else out
    torch.sub(q[0].unsqueeze(2), p[0].unsqueeze(1), out=d)
    d.square_()
    if q.size(0) > 1:
        diff = torch.empty_like(d) if work is None else work
        for c in range(1, q.size(0)):
            torch.sub(q[c].unsqueeze(2), p[c].unsqueeze(1), out=diff)
            d.add_(diff.square_())
    return d


class Workspace:
    """Flat scratch buffers reused across blocks; ``get`` returns a view of the asked shape."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple[str, torch.dtype], Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        size = math.prod(shape)
        buf = self._buffers.get((name, dtype))
        if buf is None or buf.numel() < size:
            buf = torch.empty(size, dtype=dtype, device=self.device)
            self._buffers[(name, dtype)] = buf
        return buf[:size].view(shape)


def sq_radius(r: float, like: Tensor) -> Tensor:
    """``r * r`` computed in double and rounded once to ``like``'s dtype (0-dim tensor)."""
    return torch.tensor(r * r, dtype=like.dtype, device=like.device)


def search_slack(dtype: torch.dtype, dim: int) -> float:
    """Relative slack that covers the rounding of :func:`pair_sq_dist` in ``dtype`` against
    exact distances; libraries that measure differently are asked for ``r * (1 + slack)``
    and their answer is then settled with :func:`pair_sq_dist`."""
    return max(64, 8 * dim) * torch.finfo(dtype).eps


# ---------------------------------------------------------------------------------------
# cloud-aligned blocks (native backends)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Clouds ``b0 .. b1 - 1``; for a split cloud (``b1 == b0 + 1``) only its queries
    ``q0 .. q1 - 1`` (global indices), otherwise all queries of those clouds."""

    b0: int
    b1: int
    q0: int
    q1: int


def plan_blocks(cp: Clouds, cq: Clouds, budget: int) -> list[Block]:
    """Greedy chunks of consecutive clouds whose padded distance block
    ``clouds x max queries x max points`` stays within ``budget`` elements (a cloud that
    alone exceeds it is split along its queries). Clouds without queries or without points
    are skipped: they produce no pairs. ``cp`` / ``cq``: clouds of the points / queries."""
    ptr_p, ptr_q = cp.ptr_list, cq.ptr_list
    blocks: list[Block] = []
    num_clouds = len(ptr_p) - 1
    b = 0
    while b < num_clouds:
        n = ptr_p[b + 1] - ptr_p[b]
        m = ptr_q[b + 1] - ptr_q[b]
        if n == 0 or m == 0:
            b += 1
            continue
        if m * n > budget:
            step = max(1, budget // n)
            for s in range(ptr_q[b], ptr_q[b + 1], step):
                blocks.append(Block(b, b + 1, s, min(s + step, ptr_q[b + 1])))
            b += 1
            continue
        e, max_n, max_m = b + 1, n, m
        while e < num_clouds:
            n_e = ptr_p[e + 1] - ptr_p[e]
            m_e = ptr_q[e + 1] - ptr_q[e]
            if n_e == 0 or m_e == 0:
                break
            if (e + 1 - b) * max(max_n, n_e) * max(max_m, m_e) > budget:
                break
            max_n, max_m, e = max(max_n, n_e), max(max_m, m_e), e + 1
        blocks.append(Block(b, e, ptr_q[b], ptr_q[e]))
        b = e
    return blocks


def budget_for(device: torch.device) -> int:
    return BLOCK_ELEMENTS * (16 if device.type == "cuda" else 1)


def gather_block(
    pos: Tensor, clouds: Clouds, b0: int, b1: int, i0: int, i1: int, fill: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows ``i0 .. i1 - 1`` of ``pos: [N, D]`` (clouds ``b0 .. b1 - 1`` of ``clouds``) as a
    padded coordinate-major block.

    Returns ``(block [D, C, w], start [C], count [C])``: slot ``j < count[c]`` of cloud
    ``b0 + c`` holds row ``start[c] + j``; padding slots hold ``fill``.
    """
    device = pos.device
    if b1 == b0 + 1:
        block = pos[i0:i1].t().contiguous().unsqueeze(1)
        start = torch.tensor([i0], device=device)
        count = torch.tensor([i1 - i0], device=device)
        return block, start, count
    starts = clouds.ptr[b0:b1]
    count = clouds.counts[b0:b1]
    width = max(clouds.counts_list[b0:b1])
    out = pos.new_full((b1 - b0, width, pos.size(1)), fill)
    out[clouds.batch[i0:i1] - b0, clouds.local[i0:i1]] = pos[i0:i1]
    return out.permute(2, 0, 1).contiguous(), starts, count


def iter_blocks(
    p: Tensor, q: Tensor, cp: Clouds, cq: Clouds, fill: float = math.inf
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """Yield ``(q_block [D, C, m], q_start [C], q_count [C], p_block [D, C, n], p_start [C],
    p_count [C])`` over :func:`plan_blocks`, queries in ascending order."""
    cached: tuple[int, int] | None = None
    ptr_p = cp.ptr_list
    for blk in plan_blocks(cp, cq, budget_for(p.device)):
        qb, q_start, q_count = gather_block(q, cq, blk.b0, blk.b1, blk.q0, blk.q1, fill)
        if cached != (blk.b0, blk.b1):  # a split cloud reuses its points block
            pb, p_start, p_count = gather_block(
                p, cp, blk.b0, blk.b1, ptr_p[blk.b0], ptr_p[blk.b1], fill
            )
            cached = (blk.b0, blk.b1)
        yield qb, q_start, q_count, pb, p_start, p_count


# ---------------------------------------------------------------------------------------
# first k within r
# ---------------------------------------------------------------------------------------


def first_within_native(p: Tensor, q: Tensor, cp: Clouds, cq: Clouds, r: float, k: int) -> Tensor:
    """For each query, the ``k`` lowest-index points of its cloud with ``d^2 < r^2``.

    Returns ``[2, E]`` long (query, point), grouped by query ascending, points ascending.
    """
    r2 = sq_radius(r, p)
    ws = Workspace(p.device)
    rows, cols = [], []
    for qb, q_start, _, pb, p_start, _ in iter_blocks(p, q, cp, cq):
        shape = (qb.size(1), qb.size(2), pb.size(2))
        d = block_sq_dist(qb, pb, ws.get("d", shape, p.dtype), ws.get("w", shape, p.dtype))
        hit = torch.lt(d, r2, out=ws.get("hit", shape, torch.bool))  # padding (inf) never hits
        if hit.size(2) > k and int(hit.sum(2).max()) > k:
            rank = torch.cumsum(hit, 2, dtype=torch.int32, out=ws.get("rank", shape, torch.int32))
            hit &= rank <= k
        c, i, j = hit.nonzero(as_tuple=True)
        rows.append(q_start[c] + i)
        cols.append(p_start[c] + j)
    return _stack(rows, cols, p.device)


def _stack(rows: list[Tensor], cols: list[Tensor], device: torch.device) -> Tensor:
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def finalize(
    p: Tensor,
    q: Tensor,
    row: Tensor,
    col: Tensor,
    r: float,
    k: int,
    certain: Tensor | None = None,
) -> Tensor:
    """Settle candidate pairs from a library into the "first k within r" answer.

    ``row``/``col`` (long, on ``p``'s device) index ``q``/``p``; they must contain every
    pair with ``d^2 < r^2`` (a superset is fine) and no cross-cloud pair. ``certain``
    marks pairs already known to be within ``r`` (skips their recomputation). The pairs
    may come in any order.
    """
    check = torch.ones_like(row, dtype=torch.bool) if certain is None else ~certain
    if bool(check.any()):
        idx = check.nonzero().squeeze(1)
        inside = pair_sq_dist(q[row[idx]], p[col[idx]]) < sq_radius(r, p)
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[idx] = inside
        row, col = row[keep], col[keep]
    if row.numel() > 0:
        key = row * p.size(0) + col
        key = torch.sort(key).values
        row = torch.div(key, p.size(0), rounding_mode="floor")
        col = key - row * p.size(0)
    return truncate(row, col, q.size(0), k)


def truncate(row: Tensor, col: Tensor, num_queries: int, k: int) -> Tensor:
    """Keep the first ``k`` pairs of every query of (query-sorted) ``row``/``col``."""
    if row.numel() == 0:
        return torch.stack([row, col])
    # The pairs of each query form one cloud of the packed edge list.
    edges = Clouds.from_batch(row, row.numel(), num_clouds=num_queries, trusted=True)
    if edges.max_count <= k:
        return torch.stack([row, col])
    keep = edges.local < k
    return torch.stack([row[keep], col[keep]])


def settle_first_k(
    p: Tensor, q: Tensor, cp: Clouds, cq: Clouds, row: Tensor, col: Tensor, r: float, k: int
) -> Tensor:
    """Settle the answer of a library that itself keeps the first ``k`` lowest-index points
    within a slightly larger radius (torch-cluster on CUDA, pytorch3d).

    A query that got fewer than ``k`` pairs got every candidate, so filtering is enough. A
    query that got ``k`` pairs, one of them outside ``r``, may miss a point beyond the
    library's cut; such queries are recomputed with the native backend.
    """
    inside = pair_sq_dist(q[row], p[col]) < sq_radius(r, p)
    counts = torch.bincount(row, minlength=q.size(0))
    failed = torch.zeros(q.size(0), dtype=torch.bool, device=q.device)
    failed[row[~inside]] = True
    redo = failed & (counts >= k)
    keep = inside & ~redo[row]
    row, col = row[keep], col[keep]
    if bool(redo.any()):
        qi = redo.nonzero().squeeze(1)
        extra = first_within_native(p, q[qi], cp, cq.subset(qi), r, k)
        row = torch.cat([row, qi[extra[0]]])
        col = torch.cat([col, extra[1]])
    return finalize(p, q, row, col, r, k, certain=torch.ones_like(row, dtype=torch.bool))


# ---------------------------------------------------------------------------------------
# CPU libraries: which clouds share one search structure
# ---------------------------------------------------------------------------------------


#: Mean points per cloud below which CPU libraries search all clouds in one structure
#: (kept apart by an extra coordinate) instead of building one structure per cloud.
SEPARATE_BELOW = 256


def cpu_search_sets(p: Tensor, q: Tensor, cp: Clouds, cq: Clouds, gap: float):
    """Float64 numpy copies of ``p`` and ``q`` for a CPU search library, and the row
    ranges ``[(p0, p1, q0, q1), ...]`` to search together.

    Large clouds are searched one by one. Many small clouds (fewer than
    :data:`SEPARATE_BELOW` points on average) are searched at once: one extra coordinate
    ``cloud * gap`` keeps them more than ``gap`` apart, which adds no cross-cloud pair
    within ``gap`` and leaves distances inside a cloud unchanged.
    """

    def as_numpy(pos: Tensor, batch: Tensor, separate: bool):
        arr = pos.detach().cpu().to(torch.float64).numpy()
        if not separate:
            return arr
        extra = batch.detach().cpu().to(torch.float64).numpy()[:, None] * gap
        return np.concatenate([arr, extra], axis=1)

    num_clouds = cp.num_clouds
    together = num_clouds == 1 or p.size(0) < SEPARATE_BELOW * num_clouds
    separate = together and num_clouds > 1
    p_np = as_numpy(p, cp.batch, separate)
    q_np = p_np if q is p else as_numpy(q, cq.batch, separate)
    if together:
        return p_np, q_np, [(0, p.size(0), 0, q.size(0))]
    groups = []
    ptr_p, ptr_q = cp.ptr_list, cq.ptr_list
    for b in range(num_clouds):
        p0, p1 = ptr_p[b], ptr_p[b + 1]
        q0, q1 = ptr_q[b], ptr_q[b + 1]
        if p1 > p0 and q1 > q0:
            groups.append((p0, p1, q0, q1))
    return p_np, q_np, groups


# ---------------------------------------------------------------------------------------
# CPU dispatch
# ---------------------------------------------------------------------------------------


#: CPU dispatch: the native brute force is preferred up to this many same-cloud pairs...
NATIVE_MAX_PAIRS = 1 << 20
#: ...or up to this many pairs per point (queries and searched points counted together).
NATIVE_PAIRS_PER_POINT = 128


def native_is_faster_on_cpu(cp: Clouds, cq: Clouds) -> bool:
    """Whether brute force beats a kd-tree on CPU for this problem.

    Measured on a 2-core CPU (one torch thread): brute force costs about 4-12 ns per
    same-cloud pair, a kd-tree search about 1.5 us per point; so brute force wins while
    ``pairs <= max(2^20, 128 * (N + M))`` - small problems and batches of small clouds.
    """
    pairs = int(np.dot(cp.counts_np, cq.counts_np))
    points = cp.num_points + cq.num_points
    return pairs <= max(NATIVE_MAX_PAIRS, NATIVE_PAIRS_PER_POINT * points)
