"""Tests for ``pointset.ops.knn``.

Oracle: :func:`knn_oracle`, a plain loop written here - for every query, squared distances
to every point of its cloud by direct differences coordinate by coordinate, then the points
ordered by (distance, index). The native backend must reproduce it exactly; library backends
must give the same neighbour distances, and the same indices except at the k-th distance,
where an exact tie may be broken differently. torch-cluster is the layout reference.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import _native_knn, knn, knn_dense, knn_graph
from pointset.ops._backend import is_available, unavailable_reason

BACKENDS = ("native", "numba", "scipy", "torch_cluster", "open3d", "pytorch3d")


def need(backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} not installed: {unavailable_reason(backend)}")


def sq_dist(points: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    d = (points[:, 0] - q[0]) ** 2
    for c in range(1, points.size(1)):
        d = d + (points[:, c] - q[c]) ** 2
    return d


def knn_oracle(x, y, k, batch_x, batch_y, skip_self=False):
    """Brute force: per query, (distance, index)-sorted points of its cloud; first k.

    Returns (rows, cols, dists) lists in the packed layout of ``knn``.
    """
    rows, cols, dists = [], [], []
    for i in range(y.size(0)):
        members = (batch_x == batch_y[i]).nonzero().view(-1)
        d = sq_dist(x[members], y[i])
        pairs = sorted(
            (float(d[j]), int(members[j]))
            for j in range(members.numel())
            if not (skip_self and int(members[j]) == i)
        )
        for dist, col in pairs[:k]:
            rows.append(i)
            cols.append(col)
            dists.append(dist)
    return rows, cols, dists


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


def sq_dist_pairs(a, b):
    d = (a[:, 0] - b[:, 0]) ** 2
    for c in range(1, a.size(1)):
        d = d + (a[:, c] - b[:, c]) ** 2
    return d


def pair_dists(edge, x, y):
    """Squared distance of every returned (query, neighbour) pair, plain formula."""
    return sq_dist_pairs(x[edge[1]], y[edge[0]]).tolist()


def check_pairs(edge, x, y, k, batch_x, batch_y, exact, skip_self=False):
    """``edge`` ([2, M*k], row 0 queries) against knn_oracle: same rows and distances;
    same indices everywhere (``exact``) or wherever the distance is below the k-th."""
    rows, cols, dists = knn_oracle(x, y, k, batch_x, batch_y, skip_self)
    assert edge.dtype == torch.long and edge.shape == (2, len(rows))
    assert edge[0].tolist() == rows
    assert pair_dists(edge, x, y) == dists
    if exact:
        assert edge[1].tolist() == cols
    else:
        kth = torch.tensor(dists).view(-1, k)[:, -1:].expand(-1, k).reshape(-1)
        below = torch.tensor(dists) < kth
        assert edge[1][below].tolist() == torch.tensor(cols)[below].tolist()
        assert batch_x[edge[1]].tolist() == batch_y[edge[0]].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid_bits", [None, 2])
def test_knn_equals_oracle(backend, dtype, grid_bits):
    """knn(x, y) of every backend == knn_oracle, clouds of unequal sizes, queries per cloud."""
    need(backend)
    x, batch_x = make_clouds([60, 5, 90], 3, dtype, grid_bits, seed=1)
    y, batch_y = make_clouds([20, 7, 31], 3, dtype, grid_bits, seed=2)
    edge = knn(x, y, 5, batch_x, batch_y, backend=backend)
    check_pairs(edge, x, y, 5, batch_x, batch_y, exact=backend == "native")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loop", [False, True])
def test_knn_graph_equals_oracle(backend, loop):
    """knn_graph: source_to_target puts neighbours in row 0; loop=False skips self."""
    need(backend)
    x, batch = make_clouds([40, 25], 2, torch.float32, None, seed=3)
    edge = knn_graph(x, 6, batch, loop=loop, backend=backend)
    check_pairs(edge.flip(0), x, x, 6, batch, batch, backend == "native", skip_self=not loop)
    reverse = knn_graph(x, 6, batch, loop=loop, flow="target_to_source", backend=backend)
    assert torch.equal(reverse, edge.flip(0))


def test_knn_graph_without_loop_skips_self_among_duplicates():
    """Duplicate points: loop=False drops the center itself, keeps its twin (oracle)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    for backend in BACKENDS:
        if is_available(backend):
            edge = knn_graph(x, 2, backend=backend)
            assert edge.shape == (2, 8)
            assert bool((edge[0] != edge[1]).all())
            check_pairs(
                edge.flip(0),
                x,
                x,
                2,
                torch.zeros(4, dtype=torch.long),
                torch.zeros(4, dtype=torch.long),
                backend == "native",
                skip_self=True,
            )


def test_same_layout_as_torch_cluster():
    """knn / knn_graph output tensors equal torch-cluster's (tie-free clouds)."""
    need("torch_cluster")
    import torch_cluster

    x, bx = make_clouds([50, 70], 3, torch.float32, None, seed=4)
    y, by = make_clouds([10, 12], 3, torch.float32, None, seed=5)
    assert torch.equal(knn(x, y, 4, bx, by), torch_cluster.knn(x, y, 4, bx, by))
    for loop in (False, True):
        for flow in ("source_to_target", "target_to_source"):
            ours = knn_graph(x, 4, bx, loop=loop, flow=flow)
            theirs = torch_cluster.knn_graph(x, 4, bx, loop=loop, flow=flow)
            assert torch.equal(ours, theirs)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 25), min_size=1, max_size=4),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grid_bits=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_every_backend_equals_oracle(sizes, dim, dtype, grid_bits, seed, data):
    """Random batches (size-1 clouds included), 2-D/3-D, f32/f64: all backends == oracle."""
    k = data.draw(st.integers(1, min(sizes)))
    x, batch = make_clouds(sizes, dim, dtype, grid_bits, seed)
    for backend in BACKENDS:
        if is_available(backend):
            edge = knn(x, x, k, batch, batch, backend=backend)
            check_pairs(edge, x, x, k, batch, batch, exact=backend == "native")
            if k < min(sizes):
                graph = knn_graph(x, k, batch, backend=backend)
                check_pairs(graph.flip(0), x, x, k, batch, batch, backend == "native", True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_equals_oracle(backend):
    """knn_dense: distances and indices per padded cloud; padded queries hold zeros."""
    need(backend)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(3, 30, 3, generator=gen)
    y = torch.rand(3, 12, 3, generator=gen)
    x_len, y_len = torch.tensor([30, 9, 17]), torch.tensor([12, 12, 4])
    dist, idx = knn_dense(x, y, 4, x_len, y_len, backend=backend)
    assert dist.shape == idx.shape == (3, 12, 4)
    for b in range(3):
        nx, ny = int(x_len[b]), int(y_len[b])
        zeros = torch.zeros(ny, dtype=torch.long)
        rows, cols, dists = knn_oracle(
            x[b, :nx], y[b, :ny], 4, torch.zeros(nx, dtype=torch.long), zeros
        )
        assert dist[b, :ny].reshape(-1).tolist() == dists
        if backend == "native":
            assert idx[b, :ny].reshape(-1).tolist() == cols
        assert bool((dist[b, ny:] == 0).all()) and bool((idx[b, ny:] == 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_single_padded_cloud_ignores_padding(backend):
    """One padded cloud: neighbours come from the valid prefix only (oracle on it)."""
    need(backend)
    gen = torch.Generator().manual_seed(12)
    x = torch.rand(1, 30, 3, generator=gen)
    y = torch.rand(1, 10, 3, generator=gen)
    dist, idx = knn_dense(x, y, 3, torch.tensor([12]), torch.tensor([4]), backend=backend)
    zeros = torch.zeros(4, dtype=torch.long)
    _, cols, dists = knn_oracle(x[0, :12], y[0, :4], 3, torch.zeros(12, dtype=torch.long), zeros)
    assert dist[0, :4].reshape(-1).tolist() == dists
    assert idx[0, :4].reshape(-1).tolist() == cols
    assert bool((idx[0, 4:] == 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_input_equals_oracle(backend):
    """Non-contiguous x / y (every other row, a transposed view) == knn_oracle."""
    need(backend)
    gen = torch.Generator().manual_seed(13)
    x = torch.rand(3, 80, generator=gen).T[::2]
    y = torch.rand(12, 3, generator=gen)[::3]
    zeros = torch.zeros(40, dtype=torch.long)
    edge = knn(x, y, 4, zeros, torch.zeros(4, dtype=torch.long), backend=backend)
    check_pairs(edge, x, y, 4, zeros, torch.zeros(4, dtype=torch.long), backend == "native")


def test_native_chunking_does_not_change_the_result(monkeypatch):
    """Queries split into many blocks give the same answer as one block (native oracle)."""
    x, batch = make_clouds([300, 200], 3, torch.float32, 2, seed=7)
    whole = knn(x, x, 8, batch, batch, backend="native")
    monkeypatch.setattr(_native_knn, "BLOCK_ELEMENTS", 1000)
    assert torch.equal(knn(x, x, 8, batch, batch, backend="native"), whole)


def test_smallest_k_breaks_ties_to_the_lower_index():
    """All-equal rows: the k lowest indices, in order (oracle: sorted by (value, index))."""
    values, index = _native_knn.smallest_k(torch.ones(2, 9), 4)
    assert index.tolist() == [[0, 1, 2, 3]] * 2
    d = torch.tensor([[3.0, 1.0, 2.0, 1.0, 2.0, 0.0]])
    values, index = _native_knn.smallest_k(d, 4)
    assert index.tolist() == [[5, 1, 3, 2]] and values.tolist() == [[0.0, 1.0, 1.0, 2.0]]


def test_docstring_examples():
    """The examples in the knn / knn_graph docstrings."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert knn(x, torch.tensor([[0.9, 0.0]]), k=2).tolist() == [[0, 0], [1, 0]]
    assert knn_graph(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist() == [[1, 0, 1], [0, 1, 2]]


def test_reference_fixture_neighbours(shared_dir):
    """The official pointMLP grouping kNN (reference fixture, index-sorted) is reproduced."""
    data = torch.load(shared_dir / "reference/fixtures/pointmlp_mini.pt", weights_only=True)
    xyz = data["input"].transpose(1, 2).contiguous()
    for stage, points in ((0, xyz), (1, data["anchor_xyz_stage0"])):
        _, idx = knn_dense(points, data[f"anchor_xyz_stage{stage}"], 8)
        assert torch.equal(idx.sort(-1).values, data[f"knn_idx_stage{stage}"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: knn(torch.rand(7, 3), torch.rand(2, 3), 8),
            "k=8 is larger than cloud 0, which has 7 points",
        ),
        (
            lambda: knn(
                torch.rand(5, 3),
                torch.rand(2, 3),
                3,
                torch.tensor([0, 0, 0, 0, 1]),
                torch.tensor([0, 1]),
            ),
            "k=3 is larger than cloud 1, which has 1 points",
        ),
        (lambda: knn_graph(torch.rand(4, 3), 4), "without self loops, which has 4 points"),
        (lambda: knn(torch.rand(4, 3), torch.rand(2, 3), 0), "k must be a positive int"),
        (
            lambda: knn(torch.rand(4, 3), torch.tensor([[float("nan")] * 3]), 1),
            "y contains NaN or inf",
        ),
        (
            lambda: knn(torch.full((4, 3), float("inf")), torch.rand(2, 3), 1),
            "x contains NaN or inf",
        ),
        (lambda: knn(torch.zeros(0, 3), torch.rand(2, 3), 1), "x is empty"),
        (lambda: knn(torch.rand(4, 3), torch.rand(2, 2), 1), "same number of coordinates"),
        (lambda: knn(torch.rand(4, 3), torch.rand(2, 3).double(), 1), "same dtype"),
        (
            lambda: knn(
                torch.rand(4, 3),
                torch.rand(2, 3),
                1,
                torch.tensor([1, 1, 0, 0]),
                torch.tensor([0, 1]),
            ),
            "batch_x must be sorted",
        ),
        (lambda: knn_graph(torch.rand(4, 3), 1, flow="up"), "flow must be"),
        (lambda: knn_dense(torch.rand(4, 3), torch.rand(1, 2, 3), 1), r"\[B, N, D\]"),
        (
            lambda: knn_dense(torch.rand(2, 4, 3), torch.rand(2, 2, 3), 3, torch.tensor([4, 2])),
            "k=3 is larger than cloud 1, which has 2 points",
        ),
    ],
)
def test_bad_input_raises_value_error(call, message):
    """Invalid input raises ValueError naming the problem and the offending value."""
    with pytest.raises(ValueError, match=message):
        call()


def _brute_knn(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Oracle: float64 brute force, ties to the lower index."""
    d = ((y.double()[:, None] - x.double()[None]) ** 2).sum(-1)
    return torch.tensor(
        [sorted(range(x.size(0)), key=lambda j, row=row: (float(row[j]), j))[:k] for row in d]
    )


@pytest.mark.parametrize("backend", ["native", None])
def test_inputs_that_require_grad(backend):
    """Oracle: the same call on detached input (indices); the dist2 gradient of knn_dense
    equals the analytic ``2 (y - x_j)`` summed over the neighbours found."""
    torch.manual_seed(0)
    x = torch.rand(40, 3, requires_grad=True)
    y = torch.rand(7, 3, requires_grad=True)
    assert torch.equal(knn(x, y, 4, backend=backend), knn(x.detach(), y.detach(), 4))
    assert torch.equal(knn_graph(x, 4, backend=backend), knn_graph(x.detach(), 4))
    dist, idx = knn_dense(x[None], y[None], 4, backend=backend)
    ref_dist, ref_idx = knn_dense(x[None].detach(), y[None].detach(), 4)
    assert torch.equal(idx, ref_idx) and torch.equal(dist.detach(), ref_dist)
    dist.sum().backward()
    diff = y.detach()[:, None] - x.detach()[idx[0]]  # [7, 4, 3]
    torch.testing.assert_close(y.grad, 2 * diff.sum(1))
    expected_x = torch.zeros_like(x).index_add_(0, idx[0].reshape(-1), -2 * diff.reshape(-1, 3))
    torch.testing.assert_close(x.grad, expected_x)


@pytest.mark.parametrize("magnitude", [1e20, 1e-30])
@pytest.mark.parametrize("backend", ["native", None])
def test_extreme_coordinates_are_rescaled(magnitude, backend):
    """Oracle: float64 brute force on the same float32 points. Squared float32 distances
    overflow at 1e20 and vanish at 1e-30; pointset rescales by a power of two (exact)."""
    torch.manual_seed(1)
    x = (torch.rand(30, 3, dtype=torch.float64) * magnitude).float()
    y = (torch.rand(5, 3, dtype=torch.float64) * magnitude).float()
    expected = _brute_knn(x, y, 3)
    assert torch.equal(knn(x, y, 3, backend=backend)[1].view(5, 3), expected)
    dist, idx = knn_dense(x[None], y[None], 3, backend=backend)
    assert torch.equal(idx[0], expected)
    exact = ((y.double()[:, None] - x.double()[expected]) ** 2).sum(-1).float()
    torch.testing.assert_close(dist[0], exact, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------
# Regressions found by running torch-cluster's, PyG's and pytorch3d's test files
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_numba_query_far_outside_the_cloud(dim):
    """Queries far outside a tiny cloud (shell 10**4 to 10**15 cells out) get their real
    nearest neighbours on numba, as on native (oracle: knn_oracle). Once the scratch array
    was sized by the distance in cells: its allocation failed inside the parallel loop,
    silently, leaving -1 and uninitialised indices for the rest of the query block."""
    need("numba")
    gen = torch.Generator().manual_seed(21)
    x = torch.rand(500, dim, generator=gen) * 1e-3
    far = torch.tensor([[10.0] * dim, [-10.0] * dim, [1e6] + [0.0] * (dim - 1)])
    y = torch.cat([far[:1], torch.rand(300, dim, generator=gen) * 1e-3, far[1:]])
    zeros_x, zeros_y = torch.zeros(500, dtype=torch.long), torch.zeros(303, dtype=torch.long)
    for backend in ("numba", "native"):
        edge = knn(x, y, 3, backend=backend)
        check_pairs(edge, x, y, 3, zeros_x, zeros_y, exact=True)
    assert knn(x, torch.tensor([[10.0] * dim]), 3, backend="numba")[1].min() >= 0


def test_numba_parallel_errors_are_not_silent():
    """A parallel task that stops early is reported (oracle: a task made to fail on purpose
    leaves its completion flag unset, and the check raises naming the query block)."""
    need("numba")
    import numpy as np

    from pointset.ops import _numba_kernels as nk

    done = nk._chunk_flags(3 * nk._CHUNK)
    done[[0, 2]] = 1
    with pytest.raises(RuntimeError, match=r"1 of 3 query blocks \(first: queries 256 \.\. 511"):
        nk._check_done(done, "kNN")
    nk._check_done(np.ones(2, dtype=np.uint8), "kNN")  # all blocks finished: silent


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_is_measured_in_float32(backend):
    """float16 / bfloat16 points are ranked in float32 on every backend (oracle: knn_oracle
    on the same values in float32). In float16 arithmetic these distances overflow to inf
    (> 65504) and would all tie."""
    need(backend)
    x = torch.tensor([[0.0, 0.0], [300.0, 0.0], [600.0, 1.0], [601.0, 0.0]])
    y = torch.tensor([[1000.0, 0.0], [0.0, 0.5]])
    zx, zy = torch.zeros(4, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    for dtype in (torch.float16, torch.bfloat16):
        xh, yh = x.to(dtype), y.to(dtype)
        edge = knn(xh, yh, 3, backend=backend)
        check_pairs(edge, xh.float(), yh.float(), 3, zx, zy, exact=True)
        dist, idx = knn_dense(xh[None], yh[None], 3, backend=backend)
        assert dist.dtype == dtype
        assert idx[0].reshape(-1).tolist() == edge[1].tolist()
