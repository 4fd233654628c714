"""Tests for the numba backend's KD-tree FPS (``pointset.ops._numba_fps``).

Oracle: ``fps_oracle`` of ``test_fps.py``, the brute-force plain loop (squared distances by
direct differences, running minimum, next sample = lowest index of the maximum). The tree
loop is run directly with tiny leaves and no work threshold, so that every cloud goes
through the tree, its pruning and its held-back samples; it must give the oracle's
sequence from any start, ties included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fps import fps_oracle

pytest.importorskip("numba")

from pointset.ops import _numba_fps  # noqa: E402
from pointset.ops._numba_fps import _build_tree, fps_clouds  # noqa: E402


def tree_fps(points: torch.Tensor, num: int, start: int, leaf_size: int) -> list[int]:
    arr = points.numpy()[None]
    out = fps_clouds(arr, [arr.shape[1]], [num], [start], tree_work=0, leaf_size=leaf_size)
    return out[0].tolist()


def lattice(gen, n, dim, bits):
    """Points on an integer lattice of side ``2**bits``: many exactly tied distances."""
    return torch.randint(0, 2**bits, (n, dim), generator=gen).double()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    dim=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    kind=st.sampled_from(["uniform", "lattice", "duplicates", "clusters"]),
    leaf_size=st.sampled_from([1, 2, 3, 8, 64]),
    frac=st.floats(0.0, 1.0),
    start_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_tree_fps_equals_oracle(n, dim, dtype, kind, leaf_size, frac, start_frac, seed):
    """Tree loop == brute-force FPS: uniform, integer-lattice ties, duplicated points and
    far-apart clusters; 1-D to 4-D; any start; from 1 sample to more than the cloud's
    distinct points (the sequence then repeats index 0, as in the plain loop)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        pos = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    elif kind == "lattice":
        pos = lattice(gen, n, dim, 2)
    elif kind == "duplicates":
        base = lattice(gen, max(1, n // 4), dim, 1)
        pos = base[torch.randint(0, base.size(0), (n,), generator=gen)]
    else:  # clusters 1e4 apart, each a small lattice
        centre = torch.randint(0, 3, (n, 1), generator=gen).double() * 1e4
        pos = centre + lattice(gen, n, dim, 3)
    pos = pos.to(dtype)
    num = max(1, min(n, round(frac * n)))
    start = min(int(start_frac * n), n - 1)
    assert tree_fps(pos, num, start, leaf_size) == fps_oracle(pos, num, start)


@pytest.mark.parametrize("dim", [2, 3])
def test_tree_fps_large_lattice_equals_oracle(dim):
    """A 5,000-point integer lattice (ties everywhere) with the default leaf sizes ==
    brute force, from a start in the middle of the cloud."""
    gen = torch.Generator().manual_seed(dim)
    pos = lattice(gen, 5000, dim, 4).float()
    arr = pos.numpy()[None]
    got = fps_clouds(arr, [5000], [400], [2500], tree_work=0)[0].tolist()
    assert got == fps_oracle(pos, 400, 2500)


def test_tree_fps_tiny_and_subnormal_coordinates():
    """Coordinates around 1e-20 (squared distances in float32's subnormal range) and a
    cloud of one point: the tree's box test must not skip a point the plain loop updates."""
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(600, 3, generator=gen) * 1e-20
    assert tree_fps(pos, 50, 7, 4) == fps_oracle(pos, 50, 7)
    one = torch.tensor([[0.5, 0.5, 0.5]])
    assert tree_fps(one, 3, 0, 1) == [0, 0, 0]


@pytest.mark.parametrize("threads", ["one", "all"])
def test_several_clouds_mix_tree_and_plain_loops(threads, monkeypatch):
    """Clouds above and below the tree threshold (points x samples) in one call, unequal
    sizes and starts, on the calling thread and on all threads: each equals brute force on
    its own points."""
    monkeypatch.setattr(_numba_fps, "PARALLEL_MIN_WORK", 10**15 if threads == "one" else 0)
    gen = torch.Generator().manual_seed(4)
    sizes = [700, 40, 1500]
    pad = torch.zeros(3, 1500, 3)
    for b, n in enumerate(sizes):
        pad[b, :n] = torch.randint(0, 8, (n, 3), generator=gen).float()
    out = fps_clouds(pad.numpy(), sizes, [100, 40, 100], [5, 0, 1499], tree_work=50_000)
    for b, (n, s, start) in enumerate(zip(sizes, [100, 40, 100], [5, 0, 1499])):
        assert out[b, :s].tolist() == fps_oracle(pad[b, :n], s, start)
    assert not np.any(out[1, 40:])


def _check_tree(pts: np.ndarray, leaf_size: int) -> None:
    """Invariants of ``_build_tree`` on ``pts: [D, n]``: the points are a reordering of the
    input; node 0 covers them all; an internal node's two children are numbered after it,
    adjacent, non-empty, and split its range; every box is the exact bounding box of its
    range; a leaf of more than ``leaf_size`` points holds equal points (or ties the
    median cut could not break)."""
    work, idx, start, stop, child, box_lo, box_hi, depth = _build_tree(pts, leaf_size)
    n = pts.shape[1]
    assert sorted(idx.tolist()) == list(range(n))
    assert np.array_equal(work, pts[:, idx])
    assert (start[0], stop[0]) == (0, n)
    seen_depth = {0: 0}
    leaves = []
    for v in range(len(start)):
        assert np.array_equal(box_lo[v], work[:, start[v] : stop[v]].min(1))
        assert np.array_equal(box_hi[v], work[:, start[v] : stop[v]].max(1))
        c = child[v]
        if c < 0:
            assert c == -1
            leaves.append(v)
            if stop[v] - start[v] > leaf_size:
                assert np.all(box_lo[v] == box_hi[v])
            continue
        assert c > v
        assert start[c] == start[v] and stop[c] == start[c + 1] and stop[c + 1] == stop[v]
        assert start[c] < stop[c] and start[c + 1] < stop[c + 1]
        seen_depth[c] = seen_depth[c + 1] = seen_depth[v] + 1
    assert depth == max(seen_depth.values())
    covered = sorted((int(start[v]), int(stop[v])) for v in leaves)
    assert covered[0][0] == 0 and covered[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    dim=st.sampled_from([1, 2, 3, 4, 6]),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["uniform", "lattice", "flat", "one-ulp", "outlier"]),
    leaf_size=st.sampled_from([1, 2, 5, 16]),
    seed=st.integers(0, 2**16),
)
def test_property_tree_structure(n, dim, dtype, kind, leaf_size, seed):
    """The KD-tree's invariants (see ``_check_tree``) on uniform points, a small integer
    lattice (many equal points), a flat cloud (zero extent on all but one side), points
    one unit in the last place apart (middle cuts round onto a side: the median cut
    takes over) and one far outlier."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        pts = rng.random((dim, n))
    elif kind == "lattice":
        pts = rng.integers(0, 3, (dim, n)).astype(float)
    elif kind == "flat":
        pts = np.zeros((dim, n))
        pts[0] = rng.random(n)
    elif kind == "one-ulp":
        one = np.ones(1, dtype=dtype)
        pts = np.where(rng.random((dim, n)) < 0.5, one, np.nextafter(one, 2 * one))
    else:
        pts = rng.random((dim, n))
        pts[:, 0] = 1e6
    _check_tree(np.ascontiguousarray(pts.astype(dtype)), leaf_size)
