"""Tests for the ``"triton"`` backend, run through Triton's interpreter on CPU tensors.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when
``pointset.ops._triton_kernels`` is first imported; this module sets it before any triton
kernel of pointset exists, so the real kernels (the GPU launch code path, tiles and
reductions) execute with NumPy. Every op is compared with two oracles: the brute-force
loops of the other op test files (``knn_oracle``, ``radius_oracle``, ``ball_oracle``,
``nearest_oracle``, ``fps_oracle``) and the native backend's output, which must be equal
bit for bit. Inputs stay small: the interpreter runs a kernel tile by tile in Python.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if os.environ.get("TRITON_INTERPRET", "1") != "1":
    pytest.skip("TRITON_INTERPRET is set to something other than 1", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from test_ball_query import ball_oracle  # noqa: E402
from test_fps import check_against_oracle, fps_oracle  # noqa: E402
from test_knn import check_pairs  # noqa: E402
from test_nearest import nearest_oracle  # noqa: E402
from test_radius import radius_oracle  # noqa: E402

from pointset import ops  # noqa: E402
from pointset.ops import (  # noqa: E402
    _backend,
    _triton_launch,
    fps,
    knn,
    knn_dense,
    knn_graph,
    nearest,
)
from pointset.ops._backend import BackendUnavailableError  # noqa: E402

fps_module = importlib.import_module("pointset.ops.fps")
knn_module = importlib.import_module("pointset.ops.knn")
radius_module = importlib.import_module("pointset.ops.radius")

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def selection_knn_kernel(request, monkeypatch):
    """Float32 kNN with k <= 128 normally runs the one-pass sorted kernel, whose bitonic
    ``tl.sort`` takes seconds per tile in the interpreter. Tests run the selection kernel
    (same contract) unless their name starts with ``test_sorted_``; those few cover the
    sorted kernel against the same oracles."""
    if not request.node.name.startswith("test_sorted_"):
        monkeypatch.setattr(_triton_launch, "SORTED_MAX_K", 0)


def lattice(sizes, dim, dtype, seed, scale=1.0, step=None):
    """Packed clouds: uniform random times ``scale``, or integer lattice points
    ``0..step-1`` times ``scale`` (many exact distance ties)."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if step is None:
        pos = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    else:
        pos = torch.randint(0, step, (n, dim), generator=gen).to(torch.float64)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return (pos * scale).to(dtype), batch


CASES = {
    # name: (x sizes, y sizes, scale, lattice step)
    "random": ([40, 7, 55], [9, 3, 12], 1.0, None),
    "lattice_ties": ([40, 7, 55], [9, 3, 12], 1.0, 4),
    "scale_1e4": ([40, 7, 55], [9, 3, 12], 1e4, None),
    "lattice_1e4": ([40, 7, 55], [9, 3, 12], 1e4, 5),
    "empty_middle": ([30, 0, 45], [8, 0, 10], 1.0, 3),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_equals_oracle_and_native(case, dim, dtype):
    """knn: brute-force oracle (indices and distances) and native's edges, bit for bit."""
    xs, ys, scale, step = CASES[case]
    x, bx = lattice(xs, dim, dtype, 1, scale, step)
    y, by = lattice(ys, dim, dtype, 2, scale, step)
    edge = knn(x, y, 5, bx, by, backend="triton")
    check_pairs(edge, x, y, 5, bx, by, exact=True)
    assert torch.equal(edge, knn(x, y, 5, bx, by, backend="native"))


@pytest.mark.parametrize("loop", [False, True])
def test_knn_graph_equals_oracle_and_native(loop):
    """knn_graph on an integer lattice with an empty middle cloud: oracle (self skipped
    without loop, among duplicates too) and native, both flows."""
    x, batch = lattice([35, 0, 28], 3, torch.float32, 3, step=3)
    edge = knn_graph(x, 6, batch, loop=loop, backend="triton")
    check_pairs(edge.flip(0), x, x, 6, batch, batch, True, skip_self=not loop)
    assert torch.equal(edge, knn_graph(x, 6, batch, loop=loop, backend="native"))
    reverse = knn_graph(x, 6, batch, loop=loop, flow="target_to_source", backend="triton")
    assert torch.equal(reverse, edge.flip(0))


def test_knn_k_120_at_1e4_scale():
    """k = 120 (beyond torch-cluster's CUDA limit of 100) on coordinates up to 1e4, with
    neighbours more than 1e5 apart in squared distance: oracle and native."""
    x, bx = lattice([125, 130], 2, torch.float32, 4, scale=1e4)
    y, by = lattice([6, 5], 2, torch.float32, 5, scale=1e4)
    edge = knn(x, y, 120, bx, by, backend="triton")
    check_pairs(edge, x, y, 120, bx, by, exact=True)
    assert torch.equal(edge, knn(x, y, 120, bx, by, backend="native"))


def test_knn_dense_with_lengths():
    """knn_dense: padded clouds with lengths (one empty query cloud), distances and
    indices equal to native's."""
    x = torch.rand(3, 30, 3, dtype=torch.float64) * 1e4
    y = torch.rand(3, 12, 3, dtype=torch.float64) * 1e4
    xl, yl = torch.tensor([30, 9, 20]), torch.tensor([12, 0, 5])
    got = knn_dense(x, y, 4, xl, yl, backend="triton")
    want = knn_dense(x, y, 4, xl, yl, backend="native")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_half_precision_ranks_in_float32():
    """float16 / bfloat16 are ranked in float32 (documented): the answer equals the
    float32 answer of the same coordinates (oracle: native on the float32 copy)."""
    x, bx = lattice([30, 25], 3, torch.float32, 6)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        got = knn(xh, xh, 4, bx, bx, backend="triton")
        assert torch.equal(got, knn(xh.float(), xh.float(), 4, bx, bx, backend="native"))


@pytest.mark.parametrize("case", ["random", "lattice_ties", "scale_1e4", "empty_middle"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_radius_and_ball_query_equal_oracle_and_native(case, dtype):
    """radius / ball_query: strict d^2 < r^2, first k lowest indices (radius_oracle,
    ball_oracle) and native's edges; on the lattice r = 1 * scale hits d == r exactly."""
    xs, ys, scale, step = CASES[case]
    x, bx = lattice(xs, 3, dtype, 7, scale, step)
    y, by = lattice(ys, 3, dtype, 8, scale, step)
    r = (1.0 if step else 0.35) * scale
    for k in (4, 1000):
        edge = ops.radius(x, y, r, bx, by, max_num_neighbors=k, backend="triton")
        assert edge.tolist() == radius_oracle(x, y, r, bx, by, k)
        assert torch.equal(edge, ops.radius(x, y, r, bx, by, k, backend="native"))
    idx, mask = ops.ball_query(x, y, r, 5, bx, by, backend="triton")
    assert torch.equal(idx, ball_oracle(x, y, r, 5, bx, by))
    assert torch.equal(mask, idx >= 0)


@pytest.mark.parametrize("loop", [False, True])
def test_radius_graph_equals_oracle_and_native(loop):
    """radius_graph without / with self loops on a 2-D lattice (radius_oracle, native)."""
    x, batch = lattice([30, 0, 26], 2, torch.float32, 9, step=4)
    edge = ops.radius_graph(x, 1.5, batch, loop=loop, max_num_neighbors=5, backend="triton")
    want = radius_oracle(x, x, 1.5, batch, batch, 5, skip_self=not loop)
    assert edge.flip(0).tolist() == want
    native = ops.radius_graph(x, 1.5, batch, loop=loop, max_num_neighbors=5, backend="native")
    assert torch.equal(edge, native)


def test_radius_huge_max_num_neighbors_allocates_by_edges():
    """max_num_neighbors = 10**9 means "keep all": memory follows the edges found
    (oracle: radius_oracle with that k)."""
    x, batch = lattice([40, 30], 3, torch.float32, 10)
    edge = ops.radius(x, x, 0.5, batch, batch, max_num_neighbors=10**9, backend="triton")
    assert edge.tolist() == radius_oracle(x, x, 0.5, batch, batch, 10**9)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_equals_oracle_and_native(case, dtype):
    """nearest: lowest-index ties on lattices, 1e4 scale, empty middle cloud (oracle and
    native)."""
    xs, ys, scale, step = CASES[case]
    x, bx = lattice(xs, 3, dtype, 11, scale, step)
    y, by = lattice([max(1, n // 4) if n else 0 for n in xs], 3, dtype, 12, scale, step)
    got = nearest(x, y, bx, by, backend="triton")
    assert got.tolist() == nearest_oracle(x, y, bx, by)
    assert torch.equal(got, nearest(x, y, bx, by, backend="native"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fps_equals_oracle_and_native(case, dim, dtype):
    """fps: the identical sequence from the first point (fps_oracle, native), unequal
    clouds, lattice ties, 1e4 scale, an empty middle cloud."""
    sizes, _, scale, step = CASES[case]
    pos, batch = lattice(sizes, dim, dtype, 13, scale, step)
    idx = fps(pos, batch, ratio=0.3, backend="triton")
    samples = [-(-3 * n // 10) for n in sizes]
    ptr, got = [0], idx.tolist()
    for n in sizes:
        ptr.append(ptr[-1] + n)
    for b, s in enumerate(samples):
        first = sum(samples[:b])
        local = [i - ptr[b] for i in got[first : first + s]]
        assert local == (fps_oracle(pos[ptr[b] : ptr[b + 1]], s) if s else [])
    assert len(got) == sum(samples)
    assert torch.equal(idx, fps(pos, batch, ratio=0.3, backend="native"))


def test_fps_random_start_and_dense():
    """Random start: the same draw as native gives the same sequence from that start
    (fps_oracle); fps_dense with lengths equals native."""
    pos, batch = lattice([50, 33], 3, torch.float64, 14, scale=1e4)
    torch.manual_seed(5)
    idx = fps(pos, batch, num=12, random_start=True, backend="triton")
    torch.manual_seed(5)
    assert torch.equal(idx, fps(pos, batch, num=12, random_start=True, backend="native"))
    check_against_oracle(idx, pos, batch, [50, 33], [12, 12], fixed_start=False)
    dense = torch.rand(2, 40, 2) * 1e4
    lengths = torch.tensor([40, 17])
    got = ops.fps_dense(dense, 10, lengths, backend="triton")
    assert torch.equal(got, ops.fps_dense(dense, 10, lengths, backend="native"))
    assert got[1].tolist() == fps_oracle(dense[1, :17], 10)


def test_cpu_needs_the_interpreter(monkeypatch):
    """Without TRITON_INTERPRET=1 a forced triton backend on CPU tensors raises, naming
    the reason; auto never lists triton for CPU tensors."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    pos = torch.rand(20, 3)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        knn(pos, pos, 2, backend="triton")
    with pytest.raises(BackendUnavailableError, match="CUDA tensors"), ops.use_backend("triton"):
        fps(pos, num=3)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "triton" not in knn_module.auto(cpu, 2)
    assert "triton" not in fps_module.auto(cpu, torch.float32, False)
    assert "triton" not in radius_module.auto(cpu, None, None, 3)
    assert knn_module.auto(cuda, 2)[0] == "triton"
    assert fps_module.auto(cuda, torch.float32, True)[0] == "triton"
    assert radius_module.auto(cuda, None, None, 3)[0] == "triton"
    name, _ = _backend.select("knn", knn_module._IMPLS, cpu, None, lambda: ("triton", "native"))
    assert name == "native"


def lowest_index_oracle(query, points, k, valid=None):
    """Brute force: float32 sqrt((q - p)^2 summed) per pair, (distance, index) order."""
    q32, p32 = query.float(), points.float()
    out = []
    for b in range(query.size(0)):
        rows = []
        for i in range(query.size(1)):
            d = (p32[b, :, 0] - q32[b, i, 0]).square()
            for c in range(1, query.size(2)):
                d = d + (p32[b, :, c] - q32[b, i, c]).square()
            d = d.sqrt()
            if valid is not None:
                d = d.masked_fill(~valid[b], float("inf"))
            rows.append([j for _, j in sorted((float(v), j) for j, v in enumerate(d))][:k])
        out.append(rows)
    return out


@pytest.mark.parametrize("step", [None, 4])
def test_knn_lowest_index_equals_oracle_and_native(step):
    """The AFF nearest-cluster search: float32 square-root ranking, ties to the lowest
    index, invalid points last (brute-force oracle and native)."""
    pos, _ = lattice([2 * 40], 2, torch.float32, 15, scale=1e4 if step is None else 1.0, step=step)
    points = pos.view(2, 40, 2)
    query = lattice([2 * 9], 2, torch.float32, 16, step=step)[0].view(2, 9, 2)
    valid = torch.rand(2, 40, generator=torch.Generator().manual_seed(3)) > 0.3
    for v in (None, valid):
        got = ops.knn_lowest_index(query, points, 12, v, backend="triton")
        assert got.tolist() == lowest_index_oracle(query, points, 12, v)
        assert torch.equal(got, ops.knn_lowest_index(query, points, 12, v, backend="native"))


def test_cluster_neighbourhood_equals_native():
    """cluster_neighbourhood with the triton search equals the native one field by field
    (unequal clouds, integer lattice positions as CoC/AFF image tokens)."""
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(10.0), indexing="ij")
    grid = torch.stack([xs, ys], -1).view(1, 120, 2)
    pos = torch.cat([grid, grid.flip(1)])
    for per_cloud in (False, True):
        kwargs = dict(lengths=[120, 90], extent=(10, 12), per_cloud=per_cloud)
        got = ops.cluster_neighbourhood(pos, 8, 24, backend="triton", **kwargs)
        want = ops.cluster_neighbourhood(pos, 8, 24, backend="native", **kwargs)
        for a, b in zip(got, want):
            assert (a is None and b is None) or torch.equal(a, b)


def test_sorted_kernel_knn_graph_lattice_empty_middle_cloud():
    """The sorted float32 kernel: kNN graph on an integer lattice (exact ties) with an
    empty middle cloud, oracle and native."""
    x, batch = lattice([20, 0, 12], 3, torch.float32, 17, scale=1e4, step=3)
    edge = knn_graph(x, 5, batch, backend="triton")
    check_pairs(edge.flip(0), x, x, 5, batch, batch, True, skip_self=True)
    assert torch.equal(edge, knn_graph(x, 5, batch, backend="native"))


def test_sorted_kernel_widest_tile():
    """The sorted float32 kernel at its widest tile (k = 32 = SORTED_MAX_K) on
    coordinates up to 1e4: oracle and native."""
    assert _triton_launch.SORTED_MAX_K == 32
    x, bx = lattice([32, 30], 3, torch.float32, 4, scale=1e4)
    y, by = lattice([3, 2], 3, torch.float32, 5, scale=1e4)
    edge = knn(x, y, 30, bx, by, backend="triton")
    check_pairs(edge, x, y, 30, bx, by, exact=True)
    assert torch.equal(edge, knn(x, y, 30, bx, by, backend="native"))


def test_sorted_kernel_knn_lowest_index():
    """The sorted kernel with square-root ranking and invalid points (the AFF search):
    brute-force oracle and native, on a lattice with ties."""
    points = lattice([24], 2, torch.float32, 18, step=4)[0].view(1, 24, 2)
    query = lattice([10], 2, torch.float32, 19, step=4)[0].view(1, 10, 2)
    valid = torch.arange(24).view(1, 24) % 5 != 2
    got = ops.knn_lowest_index(query, points, 7, valid, backend="triton")
    assert got.tolist() == lowest_index_oracle(query, points, 7, valid)
    assert torch.equal(got, ops.knn_lowest_index(query, points, 7, valid, backend="native"))


@settings(max_examples=6, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=3),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from(DTYPES),
    step=st.sampled_from([None, 3]),
    scale=st.sampled_from([1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_property_every_op_equals_native(sizes, dim, dtype, step, scale, seed):
    """Random batches (empty clouds allowed anywhere): knn, radius, nearest and fps of the
    triton backend equal native's output exactly."""
    sizes = [n if n == 0 else max(n, 3) for n in sizes]
    if sum(sizes) == 0:
        sizes[0] = 3
    x, batch = lattice(sizes, dim, dtype, seed, scale, step)
    k = min(n for n in sizes if n > 0)
    k = min(k, 3)
    for op in (
        lambda be: knn(x, x, k, batch, batch, backend=be),
        lambda be: ops.radius(x, x, 0.4 * scale * (step or 1), batch, batch, 4, backend=be),
        lambda be: nearest(x, x[::2], batch, batch[::2], backend=be),
        lambda be: fps(x, batch, ratio=0.5, backend=be),
    ):
        try:
            want = op("native")
        except ValueError:  # e.g. a cloud with points but no center for nearest
            with pytest.raises(ValueError):
                op("triton")
            continue
        assert torch.equal(op("triton"), want)
