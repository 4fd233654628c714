"""Tests for ``pointset.ops.fps``.

Oracle: :func:`fps_oracle`, a plain loop written here - squared distances by direct
differences coordinate by coordinate, running minimum, next sample = lowest index of the
maximum. Every installed backend must reproduce its index sequence from the same start.
Test clouds are either uniform random (no distance ties) or points on a power-of-two grid
(many exact ties, exactly representable in float32 and float64 alike).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import fps, fps_dense
from pointset.ops._backend import is_available, unavailable_reason

BACKENDS = ("native", "numba", "fpsample", "torch_cluster", "open3d", "pytorch3d")
#: Backends whose random start is honoured exactly (QuickFPS breaks ties its own way).
EXACT_RANDOM_START = ("native", "torch_cluster", "open3d", "pytorch3d")


def need(backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} not installed: {unavailable_reason(backend)}")


def sq_dist(points: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    d = (points[:, 0] - q[0]) ** 2
    for c in range(1, points.size(1)):
        d = d + (points[:, c] - q[c]) ** 2
    return d


def fps_oracle(points: torch.Tensor, num: int, start: int = 0) -> list[int]:
    """Brute-force FPS: O(N * num) plain loop, ties to the lowest index."""
    dist = torch.full((points.size(0),), math.inf, dtype=points.dtype)
    out = [start]
    for _ in range(num - 1):
        dist = torch.minimum(dist, sq_dist(points, points[out[-1]]))
        out.append(int((dist == dist.max()).nonzero()[0, 0]))
    return out


def make_clouds(sizes, dim, dtype, grid_bits, seed):
    """Packed clouds ``(pos, batch)``: uniform random, or on a grid of step 2**-grid_bits."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if grid_bits is None:
        pos = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    else:
        pos = torch.randint(0, 2**grid_bits, (n, dim), generator=gen) / 2**grid_bits
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos.to(dtype), batch


def split(idx, sizes, samples):
    """Packed result -> per-cloud lists of local indices."""
    out, pos, ptr = [], 0, 0
    for n, s in zip(sizes, samples):
        out.append((idx[pos : pos + s] - ptr).tolist())
        pos += s
        ptr += n
    assert pos == idx.numel()
    return out


def check_against_oracle(idx, pos, batch, sizes, samples, fixed_start=True):
    ptr = 0
    for n, s, got in zip(sizes, samples, split(idx, sizes, samples)):
        cloud = pos[ptr : ptr + n]
        start = 0 if fixed_start else got[0]
        assert got == fps_oracle(cloud, s, start)
        ptr += n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid_bits", [None, 2])
def test_fixed_start_equals_oracle(backend, dtype, grid_bits):
    """Every backend == fps_oracle from each cloud's first point, unequal cloud sizes."""
    need(backend)
    sizes = [300, 1, 57, 520]
    pos, batch = make_clouds(sizes, 3, dtype, grid_bits, seed=1)
    idx = fps(pos, batch, ratio=0.4, backend=backend)
    samples = [math.ceil(0.4 * n) for n in sizes]
    check_against_oracle(idx, pos, batch, sizes, samples)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "open3d"])
def test_two_dimensional_equals_oracle(backend):
    """2-D points, num per cloud: every backend == fps_oracle (open3d is 3-D only)."""
    need(backend)
    sizes = [200, 64]
    pos, batch = make_clouds(sizes, 2, torch.float32, 3, seed=2)
    idx = fps(pos, batch, num=40, backend=backend)
    check_against_oracle(idx, pos, batch, sizes, [40, 40])


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_start_equals_oracle_from_its_start(backend):
    """random_start: each cloud's sequence == fps_oracle from its own first sample."""
    need(backend)
    sizes = [400, 90]
    pos, batch = make_clouds(sizes, 3, torch.float32, None, seed=3)
    torch.manual_seed(0)
    idx = fps(pos, batch, num=60, random_start=True, backend=backend)
    check_against_oracle(idx, pos, batch, sizes, [60, 60], fixed_start=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_start_reproducible_under_manual_seed(backend):
    """Same torch seed -> same samples; a run of seeds starts at more than one point."""
    need(backend)
    pos, batch = make_clouds([500, 300], 3, torch.float32, None, seed=4)
    torch.manual_seed(7)
    a = fps(pos, batch, num=20, random_start=True, backend=backend)
    torch.manual_seed(7)
    b = fps(pos, batch, num=20, random_start=True, backend=backend)
    assert torch.equal(a, b)
    firsts = set()
    for seed in range(8):
        torch.manual_seed(seed)
        firsts.add(int(fps(pos, batch, num=2, random_start=True, backend=backend)[0]))
    assert len(firsts) > 1


def test_backends_honouring_the_start_agree_on_random_start():
    """The start comes from torch's generator, so exact backends give identical output."""
    pos, batch = make_clouds([700, 300], 3, torch.float32, 3, seed=5)
    results = []
    for backend in EXACT_RANDOM_START:
        if is_available(backend):
            torch.manual_seed(11)
            results.append(fps(pos, batch, num=50, random_start=True, backend=backend))
    for other in results[1:]:
        assert torch.equal(results[0], other)


@pytest.mark.parametrize("backend", ["native", "fpsample", "torch_cluster", "open3d"])
def test_large_cloud_equals_oracle(backend):
    """A cloud above the bucket-pruning threshold (grid with ties and random) == oracle."""
    need(backend)
    gen = torch.Generator().manual_seed(6)
    grid = torch.randint(0, 64, (12_000, 3), generator=gen).float() / 64
    for pos in (grid, torch.rand(12_000, 3, generator=gen)):
        assert fps(pos, num=300, backend=backend).tolist() == fps_oracle(pos, 300)


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grid_bits=st.sampled_from([None, 1, 3]),
    ratio=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_every_backend_equals_oracle(sizes, dim, dtype, grid_bits, ratio, seed):
    """Random batches of unequal clouds (size 1 included): all backends == fps_oracle."""
    pos, batch = make_clouds(sizes, dim, dtype, grid_bits, seed)
    samples = [math.ceil(ratio * n) for n in sizes]
    for backend in BACKENDS:
        if not is_available(backend) or (backend == "open3d" and dim != 3):
            continue
        idx = fps(pos, batch, ratio=ratio, backend=backend)
        check_against_oracle(idx, pos, batch, sizes, samples)


@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    grid_bits=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_property_random_start_exact_backends(sizes, grid_bits, seed):
    """random_start with ties: backends that honour the start == oracle from it."""
    pos, batch = make_clouds(sizes, 3, torch.float32, grid_bits, seed)
    num = min(sizes)
    for backend in EXACT_RANDOM_START:
        if is_available(backend):
            torch.manual_seed(seed)
            idx = fps(pos, batch, num=num, random_start=True, backend=backend)
            check_against_oracle(idx, pos, batch, sizes, [num] * len(sizes), False)


def test_auto_equals_oracle_and_default_ratio_is_half():
    """Automatic backend, no ratio/num: ceil(n / 2) samples per cloud == oracle."""
    sizes = [11, 4, 1]
    pos, batch = make_clouds(sizes, 3, torch.float32, None, seed=8)
    idx = fps(pos, batch)
    check_against_oracle(idx, pos, batch, sizes, [6, 2, 1])


def test_single_cloud_without_batch():
    """batch=None is one cloud; the docstring example holds."""
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [2.0, 0.0]])
    assert fps(pos, num=3).tolist() == [0, 2, 3] == fps_oracle(pos, 3)


def test_empty_cloud_in_the_middle_of_a_batch_gives_no_samples():
    """A cloud id with no points (batch skips it) contributes nothing with a ratio."""
    pos, _ = make_clouds([5, 7], 3, torch.float32, None, seed=9)
    batch = torch.tensor([0] * 5 + [2] * 7)
    idx = fps(pos, batch, ratio=0.5)
    assert split(idx, [5, 7], [3, 4]) == [fps_oracle(pos[:5], 3), fps_oracle(pos[5:], 4)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_with_lengths_equals_oracle(backend):
    """fps_dense on padded clouds: each row == oracle on its valid prefix."""
    need(backend)
    gen = torch.Generator().manual_seed(10)
    pos = torch.rand(3, 80, 3, generator=gen)
    lengths = torch.tensor([80, 33, 50])
    idx = fps_dense(pos, 25, lengths, backend=backend)
    assert idx.shape == (3, 25)
    for b in range(3):
        assert idx[b].tolist() == fps_oracle(pos[b, : lengths[b]], 25)
    full = fps_dense(pos, 10, backend=backend)
    assert [row.tolist() for row in full] == [fps_oracle(p, 10) for p in pos]


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_input_equals_oracle(backend):
    """A non-contiguous view (every other row of a transposed tensor) == fps_oracle."""
    need(backend)
    pos = torch.rand(3, 300, generator=torch.Generator().manual_seed(14)).T[::2]
    batch = torch.tensor([0] * 90 + [1] * 60)
    idx = fps(pos, batch, num=20, backend=backend)
    check_against_oracle(idx, pos, batch, [90, 60], [20, 20])


def test_dense_ignores_nan_in_padding():
    """Padded slots are never read: NaN there is allowed."""
    pos = torch.rand(2, 6, 3)
    pos[1, 4:] = float("nan")
    idx = fps_dense(pos, 3, torch.tensor([6, 4]))
    assert idx[1].tolist() == fps_oracle(pos[1, :4], 3)


def test_float32_reference_fixture_indices(shared_dir):
    """The official pointMLP stage FPS indices (reference fixture) are reproduced."""
    data = torch.load(shared_dir / "reference/fixtures/pointmlp_mini.pt", weights_only=True)
    xyz = data["input"].transpose(1, 2).contiguous()
    idx0 = fps_dense(xyz, 128)
    assert torch.equal(idx0, data["fps_idx_stage0"])
    assert torch.equal(fps_dense(data["anchor_xyz_stage0"], 64), data["fps_idx_stage1"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos": torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])}, "NaN or inf: row 1"),
        ({"pos": torch.tensor([[0.0, 1.0], [float("inf"), 0.0]])}, "NaN or inf"),
        ({"pos": torch.zeros(0, 3)}, "empty"),
        ({"pos": torch.zeros(3, 2), "batch": torch.tensor([1, 0, 0])}, "sorted"),
        (
            {"pos": torch.rand(7, 3), "batch": torch.tensor([0, 0, 0, 0, 1, 1, 1]), "num": 4},
            "num=4 is larger than cloud 1, which has 3 points",
        ),
        ({"pos": torch.rand(4, 3), "ratio": 0.0}, "ratio must be"),
        ({"pos": torch.rand(4, 3), "ratio": 1.5}, "ratio must be"),
        ({"pos": torch.rand(4, 3), "ratio": 0.5, "num": 2}, "either ratio or num"),
        ({"pos": torch.rand(4, 3), "num": 0}, "num must be a positive int"),
        ({"pos": torch.arange(6).view(3, 2)}, "floating"),
        ({"pos": torch.rand(4)}, r"shape \[N, D\]"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        fps(**kwargs)


def test_dense_bad_input_raises_value_error():
    """fps_dense checks rank, lengths and sizes."""
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        fps_dense(torch.rand(5, 3), 2)
    with pytest.raises(ValueError, match=r"lengths\[1\]=9 is outside \[0, 5\]"):
        fps_dense(torch.rand(2, 5, 3), 2, torch.tensor([5, 9]))
    with pytest.raises(ValueError, match="num=4 is larger than cloud 1, which has 3 points"):
        fps_dense(torch.rand(2, 5, 3), 4, torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="NaN"):
        fps_dense(torch.full((1, 4, 3), float("nan")), 2)


def test_open3d_refuses_two_dimensional_points():
    """open3d's FPS works on 3-D points only; forcing it on 2-D raises ValueError."""
    need("open3d")
    with pytest.raises(ValueError, match="3-D"):
        fps(torch.rand(10, 2), num=3, backend="open3d")


# ---------------------------------------------------------------------------------------
# Regressions found by running torch-cluster's, PyG's and pytorch3d's test files
# ---------------------------------------------------------------------------------------


def exact_count(ratio_text: str, n: int) -> int:
    """ceil(ratio * n) in exact rational arithmetic, the ratio read from its decimal text."""
    return math.ceil(Fraction(ratio_text) * n)


def test_ratio_count_is_the_exact_ceiling():
    """fps(25 points, ratio=0.28) keeps ceil(7/25 * 25) = 7 samples (oracle: exact rational
    ceiling, and torch-cluster's answer), not the 8 of math.ceil(0.28 * 25) in float64.
    A float32 tensor ratio and one ratio per cloud follow the same rule."""
    pos = torch.rand(25, 3, generator=torch.Generator().manual_seed(30))
    assert fps(pos, ratio=0.28).numel() == 7
    assert fps(pos, ratio=torch.tensor(0.28)).numel() == 7
    pos2, batch = make_clouds([25, 100, 10], 3, torch.float32, None, seed=31)
    idx = fps(pos2, batch, ratio=torch.tensor([0.28, 0.57, 0.7]))
    want = [exact_count("0.28", 25), exact_count("0.57", 100), exact_count("0.7", 10)]
    assert torch.bincount(batch[idx]).tolist() == want == [7, 57, 7]
    if is_available("torch_cluster"):
        import torch_cluster

        assert torch_cluster.fps(pos, ratio=0.28, random_start=False).numel() == 7


def test_every_two_digit_ratio_and_cloud_size_gives_the_exact_ceiling():
    """Ratios 0.01 .. 1.00 on clouds of 1 .. 100 points, all in one batch per ratio: every
    count is the exact rational ceiling (oracle: Fraction arithmetic). The float product
    is off for 13 of these 10,000 pairs (0.07 * 100 = 7.000000000000001, ...)."""
    sizes = list(range(1, 101))
    pos, batch = make_clouds(sizes, 2, torch.float32, None, seed=33)
    for percent in range(1, 101):
        idx = fps(pos, batch, ratio=percent / 100)
        want = [exact_count(str(percent / 100), n) for n in sizes]
        assert torch.bincount(batch[idx], minlength=100).tolist() == want, percent


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_run_on_every_backend(backend, dtype):
    """bfloat16 / float16 points with any backend forced (fpsample and open3d once raised
    TypeError on bfloat16) give the oracle's sequence on the same values in float32."""
    need(backend)
    pos, batch = make_clouds([40, 30], 3, torch.float32, None, seed=32)
    half = pos.to(dtype)
    idx = fps(half, batch, num=9, backend=backend)
    check_against_oracle(idx, half.float(), batch, [40, 30], [9, 9])
