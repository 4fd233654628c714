"""Tests for ``pointset.ops.radius`` (and the shared machinery in ``_radius_search``).

Oracle: :func:`radius_oracle`, a plain loop written here - for every query, the points of its
cloud in index order, squared distance by direct differences coordinate by coordinate in the
input dtype, kept while ``d^2 < r^2`` (``r^2`` rounded once to the dtype) until
``max_num_neighbors`` are found. Every backend must return exactly its edges. Clouds on a
coarse grid put many points exactly at distance ``r``, so the strict boundary is exercised.
torch-cluster's own ``radius`` is the upstream reference where it is deterministic.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import _radius_search, radius, radius_graph
from pointset.ops._backend import is_available, unavailable_reason
from pointset.ops._clouds import Clouds
from pointset.ops.radius import _radius_pytorch3d

BACKENDS = ("native", "numba", "scipy", "torch_cluster", "open3d", "pytorch3d")


def need(backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} not installed: {unavailable_reason(backend)}")


def sq_dist(points: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    d = (points[:, 0] - q[0]) ** 2
    for c in range(1, points.size(1)):
        d = d + (points[:, c] - q[c]) ** 2
    return d


def radius_oracle(x, y, r, batch_x, batch_y, k, skip_self=False):
    """Brute force "first k within r" per query: ``[2, E]`` (query, point) as a list pair."""
    r2 = torch.tensor(r * r, dtype=x.dtype)
    rows, cols = [], []
    for i in range(y.size(0)):
        members = (batch_x == batch_y[i]).nonzero().view(-1)
        d = sq_dist(x[members], y[i])
        found = 0
        for j in range(members.numel()):
            if found == k:
                break
            if skip_self and int(members[j]) == i:
                continue
            if d[j] < r2:
                rows.append(i)
                cols.append(int(members[j]))
                found += 1
    return [rows, cols]


def make_clouds(sizes, dim, dtype, grid_bits, seed):
    """Packed clouds: uniform random, or on a grid of step 2**-grid_bits (exact ties)."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if grid_bits is None:
        pos = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    else:
        pos = torch.randint(0, 2**grid_bits, (n, dim), generator=gen) / 2**grid_bits
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos.to(dtype), batch


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid_bits", [None, 2])
def test_radius_equals_oracle(backend, dtype, grid_bits):
    """radius(x, y) == radius_oracle: unequal clouds, a query cloud absent from x, truncation."""
    need(backend)
    x, batch_x = make_clouds([60, 5, 0, 90], 3, dtype, grid_bits, seed=1)
    y, batch_y = make_clouds([20, 7, 4, 31], 3, dtype, grid_bits, seed=2)
    for r, k in ((0.5, 4), (0.3, 32)):
        edge = radius(x, y, r, batch_x, batch_y, k, backend=backend)
        assert edge.dtype == torch.long
        assert edge.tolist() == radius_oracle(x, y, r, batch_x, batch_y, k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", [[700], [300, 400], [3] * 200])
def test_radius_search_paths(backend, sizes):
    """One large cloud, a few large clouds (one search structure each) and many small ones
    (clouds searched together) all equal the oracle."""
    need(backend)
    x, batch = make_clouds(sizes, 3, torch.float32, None, seed=3)
    y, batch_y = x[::7], batch[::7]
    edge = radius(x, y, 0.2, batch, batch_y, 5, backend=backend)
    assert edge.tolist() == radius_oracle(x, y, 0.2, batch, batch_y, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loop", [False, True])
def test_radius_graph_equals_oracle(backend, loop):
    """radius_graph: source_to_target puts neighbours in row 0; without loops the self pair
    is skipped and still at most max_num_neighbors others are kept (oracle)."""
    need(backend)
    x, batch = make_clouds([40, 25, 1], 2, torch.float32, 2, seed=4)
    edge = radius_graph(x, 0.5, batch, loop=loop, max_num_neighbors=3, backend=backend)
    expected = radius_oracle(x, x, 0.5, batch, batch, 3, skip_self=not loop)
    assert edge.flip(0).tolist() == expected
    reverse = radius_graph(
        x, 0.5, batch, loop=loop, max_num_neighbors=3, flow="target_to_source", backend=backend
    )
    assert torch.equal(reverse, edge.flip(0))


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grid_bits=st.sampled_from([None, 1, 3]),
    r=st.sampled_from([0.125, 0.25, 0.5, 0.3, 2.0]),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_property_every_backend_equals_oracle(sizes, dim, dtype, grid_bits, r, k, seed):
    """Random batches, 2-D/3-D, f32/f64, radii on the grid: every backend == oracle."""
    x, batch = make_clouds(sizes, dim, dtype, grid_bits, seed)
    expected = radius_oracle(x, x, r, batch, batch, k)
    expected_graph = radius_oracle(x, x, r, batch, batch, k, skip_self=True)
    for backend in BACKENDS:
        if is_available(backend):
            assert radius(x, x, r, batch, batch, k, backend=backend).tolist() == expected
            graph = radius_graph(x, r, batch, max_num_neighbors=k, backend=backend)
            assert graph.flip(0).tolist() == expected_graph


def test_native_blocks_do_not_change_the_result(monkeypatch):
    """A tiny block budget (clouds split along queries, clouds grouped) == one block."""
    x, batch = make_clouds([300, 2, 3, 150], 3, torch.float64, 2, seed=5)
    whole = radius(x, x, 0.5, batch, batch, 6, backend="native")
    monkeypatch.setattr(_radius_search, "BLOCK_ELEMENTS", 100)
    assert torch.equal(radius(x, x, 0.5, batch, batch, 6, backend="native"), whole)
    assert whole.tolist() == radius_oracle(x, x, 0.5, batch, batch, 6)


def test_plan_blocks_covers_every_query_once():
    """plan_blocks: each query of a cloud with points in exactly one block, within budget
    (oracle: counting queries per block)."""
    ptr_p = [0, 10, 10, 15, 1015, 1020]
    ptr_q = [0, 4, 9, 9, 309, 311]
    cp = Clouds.from_ptr(ptr_p, ptr_p[-1])
    cq = Clouds.from_ptr(ptr_q, ptr_q[-1])
    blocks = _radius_search.plan_blocks(cp, cq, budget=2000)
    covered = []
    for blk in blocks:
        n = max(ptr_p[b + 1] - ptr_p[b] for b in range(blk.b0, blk.b1))
        if blk.b1 - blk.b0 > 1:
            m = max(ptr_q[b + 1] - ptr_q[b] for b in range(blk.b0, blk.b1))
            assert (blk.b1 - blk.b0) * m * n <= 2000
        else:
            assert (blk.q1 - blk.q0) * n <= 2000 or blk.q1 - blk.q0 == 1
        covered += list(range(blk.q0, blk.q1))
    # cloud 1 has queries but no points, cloud 2 points but no queries: neither is visited
    assert covered == list(range(0, 4)) + list(range(9, 311))


def test_settle_first_k_recomputes_cut_queries():
    """settle_first_k (the torch-cluster CUDA / pytorch3d path): given the first k within a
    slightly larger radius, it returns the first k within r (oracle), also where boundary
    points took slots."""
    x, batch = make_clouds([80, 50], 2, torch.float32, 2, seed=6)
    cx, _ = _radius_search.check_pair(x, x, batch, batch)
    r, k = 0.5, 4
    loose = _radius_search.first_within_native(x, x, cx, cx, r * 1.001, k)
    settled = _radius_search.settle_first_k(x, x, cx, cx, loose[0], loose[1], r, k)
    assert not torch.equal(loose, settled)  # the boundary cases are really there
    assert settled.tolist() == radius_oracle(x, x, r, batch, batch, k)


def test_pytorch3d_glue_with_a_stand_in(monkeypatch):
    """The pytorch3d backend's packing and settling, run against a stand-in ``ball_query``
    written here from pytorch3d's contract (first K indices in index order with
    ``d^2 < radius^2``, -1 padded): result == oracle."""

    def ball_query(p1, p2, lengths1, lengths2, K, radius, return_nn):
        d2 = ((p1.unsqueeze(2) - p2.unsqueeze(1)) ** 2).sum(-1)
        valid = torch.arange(p2.size(1)) < lengths2.view(-1, 1, 1)
        hit = (d2 < radius * radius) & valid
        hit &= hit.cumsum(-1) <= K
        idx = torch.full((p1.size(0), p1.size(1), K), -1)
        b, i, j = hit.nonzero(as_tuple=True)
        slot = hit.cumsum(-1)[b, i, j] - 1
        idx[b, i, slot] = j
        return None, idx, None

    ops = types.ModuleType("pytorch3d.ops")
    ops.ball_query = ball_query
    monkeypatch.setitem(sys.modules, "pytorch3d", types.ModuleType("pytorch3d"))
    monkeypatch.setitem(sys.modules, "pytorch3d.ops", ops)
    for dtype in (torch.float32, torch.float64):
        x, batch_x = make_clouds([30, 12, 25], 3, dtype, 2, seed=7)
        y, batch_y = make_clouds([9, 0, 14], 3, dtype, 2, seed=8)
        cx, cy = _radius_search.check_pair(x, y, batch_x, batch_y)
        edge = _radius_pytorch3d(x, y, cx, cy, 0.5, 3)
        assert edge.tolist() == radius_oracle(x, y, 0.5, batch_x, batch_y, 3)


def test_same_edges_as_torch_cluster():
    """Upstream reference: torch-cluster's radius / radius_graph edge sets equal ours when no
    query has more than max_num_neighbors points (its CPU order within a query is not sorted)."""
    need("torch_cluster")
    import torch_cluster

    def as_set(edge):
        return set(map(tuple, edge.t().tolist()))

    x, bx = make_clouds([50, 70], 3, torch.float32, None, seed=9)
    y, by = make_clouds([10, 12], 3, torch.float32, None, seed=10)
    theirs = torch_cluster.radius(x, y, 0.3, bx, by, max_num_neighbors=200)
    ours = radius(x, y, 0.3, bx, by, max_num_neighbors=200)
    assert as_set(ours) == as_set(theirs) and torch.equal(ours[0], theirs[0])
    for loop in (False, True):
        for flow in ("source_to_target", "target_to_source"):
            theirs = torch_cluster.radius_graph(x, 0.3, bx, loop, 200, flow)
            ours = radius_graph(x, 0.3, bx, loop, 200, flow)
            assert as_set(ours) == as_set(theirs)


def test_boundary_is_strict():
    """A point exactly at distance r is not a neighbour (torch-cluster's ``<``)."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    for backend in BACKENDS:
        if is_available(backend):
            assert radius(x, x[:1], 1.0, backend=backend).tolist() == [[0, 0], [0, 2]]


def test_docstring_examples():
    """The examples in the radius / radius_graph docstrings."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    q = torch.tensor([[0.9, 0.0], [2.5, 0.0]])
    assert radius(x, q, r=1.0).tolist() == [[0, 0, 1], [0, 1, 2]]
    assert radius_graph(torch.tensor([[0.0], [1.0], [3.0]]), r=1.5).tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0.0}, "r must be a finite number > 0"),
        ({"r": -1.0}, "r must be a finite number > 0"),
        ({"r": float("nan")}, "r must be a finite number > 0"),
        ({"max_num_neighbors": 0}, "max_num_neighbors must be an int >= 1"),
        ({"y": torch.rand(4, 2)}, "same number of coordinates"),
        ({"y": torch.rand(4, 3, dtype=torch.float64)}, "same dtype"),
        ({"y": torch.empty(0, 3)}, "y is empty"),
        ({"x": torch.tensor([[0.0, 0.0, float("nan")]])}, "x contains NaN or inf"),
        ({"batch_x": torch.tensor([1, 0, 0, 0, 0])}, "batch_x must be sorted"),
        ({"batch_y": torch.tensor([0, 0])}, "batch_y must have shape"),
        ({"backend": "nope"}, "unknown backend"),
        ({"backend": "fpsample"}, "does not implement radius"),
    ],
)
def test_bad_input_raises(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    args = {"x": torch.rand(5, 3), "y": torch.rand(4, 3), "r": 0.5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        radius(**args)


def test_radius_graph_bad_flow_and_batch():
    """radius_graph rejects an unknown flow and names ``batch`` for a bad batch vector."""
    with pytest.raises(ValueError, match="flow must be"):
        radius_graph(torch.rand(5, 3), 0.5, flow="up")
    with pytest.raises(ValueError, match="batch must be sorted"):
        radius_graph(torch.rand(3, 3), 0.5, batch=torch.tensor([1, 0, 1]))


@pytest.mark.parametrize("backend", ["native", None])
def test_inputs_that_require_grad(backend):
    """Oracle: the same call on detached input (indices carry no gradient)."""
    x = torch.rand(40, 3, requires_grad=True)
    y = x[:6]
    assert torch.equal(radius(x, y, 0.4, backend=backend), radius(x.detach(), y.detach(), 0.4))
    assert torch.equal(radius_graph(x, 0.4, backend=backend), radius_graph(x.detach(), 0.4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_max_num_neighbors_means_keep_all(backend):
    """max_num_neighbors=10**9, as torch-cluster users write "keep all": the same edges as
    the oracle with no limit. The numba kernel once allocated [queries, max_num_neighbors]
    (7 TiB here); its memory now follows the neighbourhoods."""
    need(backend)
    gen = torch.Generator().manual_seed(22)
    x = torch.rand(1000, 3, generator=gen)
    y = torch.rand(50, 3, generator=gen)
    batch_x, batch_y = torch.zeros(1000, dtype=torch.long), torch.zeros(50, dtype=torch.long)
    edge = radius(x, y, 0.1, max_num_neighbors=10**9, backend=backend)
    assert edge.tolist() == radius_oracle(x, y, 0.1, batch_x, batch_y, 1000)
    graph = radius_graph(x, 0.1, max_num_neighbors=10**9, backend=backend)
    assert torch.equal(graph, radius_graph(x, 0.1, max_num_neighbors=999, backend="native"))


def test_numba_keeps_the_lowest_indices_when_the_ball_holds_more():
    """Balls holding more points than max_num_neighbors, and balls holding fewer, in one
    call: numba keeps the k lowest indices (oracle: radius_oracle)."""
    need("numba")
    gen = torch.Generator().manual_seed(23)
    x = torch.cat([torch.rand(400, 3, generator=gen) * 0.05, torch.rand(400, 3, generator=gen)])
    zeros = torch.zeros(800, dtype=torch.long)
    for k in (1, 7, 64, 800):
        edge = radius(x, x, 0.08, max_num_neighbors=k, backend="numba")
        assert edge.tolist() == radius_oracle(x, x, 0.08, zeros, zeros, k)
