"""Tests of pointset/ops/balanced_cluster.py (AFF space-filling balanced clustering)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops.balanced_cluster import (
    _snake_cell,
    _snake_rank,
    balanced_cluster,
    balanced_cluster_dense,
)


def lattice(h: int, w: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([cols, rows], -1).view(1, h * w, 2).float()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 90), min_size=1, max_size=3),
    dim=st.integers(1, 3),
    m=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_partition_oracle_every_point_once_balanced_sizes_and_means(sizes, dim, m, seed):
    """Oracle: counting. Each point appears exactly once; every cluster holds m points
    except each cloud's last (n - (k-1) m); centers are the plain means of the members."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), dim, generator=g) * 10
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    out = balanced_cluster(pos, m, batch)
    assert sorted(out.perm.tolist()) == list(range(pos.size(0)))
    assert torch.equal(out.cluster[out.perm], out.cluster[out.perm].sort().values)
    expected = []
    for n in sizes:
        k = math.ceil(n / m)
        expected += [m] * (k - 1) + [n - (k - 1) * m]
    assert torch.bincount(out.cluster, minlength=len(expected)).tolist() == expected
    assert out.center_batch.tolist() == sum(
        ([b] * math.ceil(n / m) for b, n in enumerate(sizes)), []
    )
    for c in range(len(expected)):
        members = pos[out.cluster == c]
        assert (batch[out.cluster == c] == out.center_batch[c]).all()
        torch.testing.assert_close(out.centers[c], members.mean(0), atol=1e-5, rtol=1e-5)


def test_reference_ranking_equals_fixture(shared_dir):
    """Oracle: the official space_filling_cluster's pos_ranking stored in aff_mini_small.pt
    for stages 0-2 (stage 0 on the 28x28 lattice, later stages on the stored token sets)."""
    path = shared_dir / "reference" / "fixtures" / "aff_mini_small.pt"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    fixture = torch.load(path, weights_only=True)
    inputs = [lattice(28, 28), fixture["layer_pos"][0], fixture["layer_pos"][1]]
    for i, pos in enumerate(inputs):
        out = balanced_cluster_dense(pos, 8, extent=(28, 28))
        assert torch.equal(out.order, fixture["sfc_pos_ranking"][i]), f"stage {i}"


def test_exact_ties_keep_incoming_order():
    """Oracle: stable-sort semantics. Duplicated points have bit-equal keys, so of each
    duplicate pair the lower index must rank first, whatever the layout."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 16, (20, 2), generator=g).float()
    pos = torch.cat([base, base.flip(0)]).unsqueeze(0)  # point i duplicates point 39 - i
    out = balanced_cluster_dense(pos, 8, extent=(16, 16))
    rank = torch.empty(40, dtype=torch.long)
    rank[out.order[0]] = torch.arange(40)
    for i in range(20):
        j = 39 - i
        same = (pos[0] == pos[0, i]).all(-1).nonzero().flatten().tolist()
        ranks = [int(rank[t]) for t in same]
        assert ranks == sorted(ranks), (i, j, same, ranks)


def snake_reference(cells: list[int]) -> list[tuple[int, ...]]:
    """Plain boustrophedon walk: last axis outermost, every inner row reversed in turn."""
    if len(cells) == 1:
        return [(c,) for c in range(cells[0])]
    inner = snake_reference(cells[:-1])
    out = []
    for i in range(cells[-1]):
        row = inner if i % 2 == 0 else inner[::-1]
        out += [cell + (i,) for cell in row]
    return out


@pytest.mark.parametrize("cells", [[5], [4, 3], [3, 4], [2, 3, 4], [3, 3, 2], [2, 2, 2, 3]])
def test_snake_order_matches_plain_walk_and_is_face_connected(cells):
    """Oracle: a plainly written recursive boustrophedon walk; consecutive cells share a
    face (Manhattan distance 1)."""
    walk = snake_reference(cells)
    grid = torch.tensor([cells])
    cell = torch.tensor([walk])
    assert _snake_rank(cell, grid).tolist() == [list(range(len(walk)))]
    assert _snake_cell(torch.arange(len(walk)).view(1, -1), grid).tolist() == [
        [list(c) for c in walk]
    ]
    for a, b in zip(walk, walk[1:]):
        assert sum(abs(x - y) for x, y in zip(a, b)) == 1


def test_two_d_order_is_row_scan_with_odd_rows_reversed():
    """Oracle: the reference's anchor order, rows top to bottom, odd rows right to left."""
    cells = snake_reference([3, 4])
    assert cells[:6] == [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (0, 1)]


def test_packed_batch_equals_each_cloud_alone():
    """Oracle: each cloud clustered alone; batching changes only the id offsets."""
    g = torch.Generator().manual_seed(3)
    clouds = [torch.rand(n, 3, generator=g) for n in (37, 8, 64)]
    pos = torch.cat(clouds)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([37, 8, 64]))
    out = balanced_cluster(pos, 8, batch)
    start, cstart = 0, 0
    for cloud in clouds:
        alone = balanced_cluster(cloud, 8)
        n = cloud.size(0)
        assert torch.equal(out.perm[start : start + n] - start, alone.perm)
        assert torch.equal(out.cluster[start : start + n] - cstart, alone.cluster)
        k = alone.centers.size(0)
        assert torch.equal(out.centers[cstart : cstart + k], alone.centers)
        start, cstart = start + n, cstart + k


def test_dense_lengths_equal_trimmed_clouds_with_batch_wide_normaliser():
    """Oracle: a single-cloud call. With one cloud the batch-wide normaliser is the cloud's
    own, so padded rows must not change a cloud's clusters."""
    g = torch.Generator().manual_seed(4)
    pos = torch.rand(1, 50, 2, generator=g) * 20
    padded = torch.cat([pos, torch.zeros(1, 14, 2)], 1)
    a = balanced_cluster_dense(pos, 8)
    b = balanced_cluster_dense(padded, 8, lengths=torch.tensor([50]))
    assert torch.equal(a.order, b.order[:, :50])
    assert torch.equal(a.member, b.member)
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.centers, b.centers)


def test_dense_per_cloud_equals_each_cloud_alone():
    """Oracle: each cloud clustered alone by a single-cloud dense call. per_cloud=True
    gives every cloud its own ratio normaliser, so the batched result equals the lone
    ones. Control: an image lattice (points on anchor centres give huge ratios) batched
    with random points, where the default batch-wide normaliser changes the order."""
    g = torch.Generator().manual_seed(0)
    clouds = [lattice(8, 8), torch.rand(1, 64, 2, generator=g) * 8]
    pos = torch.cat(clouds)
    out = balanced_cluster_dense(pos, 4, extent=(8, 8), per_cloud=True)
    for b, cloud in enumerate(clouds):
        alone = balanced_cluster_dense(cloud, 4, extent=(8, 8))
        assert torch.equal(out.order[b], alone.order[0])
        assert torch.equal(out.member[b], alone.member[0])
        assert torch.equal(out.centers[b], alone.centers[0])
    shared = balanced_cluster_dense(pos, 4, extent=(8, 8))
    assert not torch.equal(shared.order, out.order)


def test_float64_input_makes_the_float32_decisions():
    """Oracle: the float32 call; keys are always computed in float32."""
    pos = torch.rand(1, 100, 3, dtype=torch.float64)
    assert torch.equal(
        balanced_cluster_dense(pos, 8).order, balanced_cluster_dense(pos.float(), 8).order
    )


def test_three_d_lattice_and_degenerate_clouds():
    """Oracle: counting on a 3-D lattice, a flat 3-D cloud, and a cloud of one repeated point."""
    rows = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).view(1, 64, 3)
    out = balanced_cluster_dense(rows, 8, extent=(4, 4, 4))
    assert sorted(out.order[0].tolist()) == list(range(64))
    assert out.mask.all()
    flat = torch.rand(30, 3)
    flat[:, 2] = 1.0
    assert torch.bincount(balanced_cluster(flat, 8).cluster).tolist() == [8, 8, 8, 6]
    same = torch.ones(5, 2)
    assert balanced_cluster(same, 2).cluster.tolist() == [0, 0, 1, 1, 2]


def test_bad_input_raises_value_error():
    """Oracle: the documented error cases."""
    pos = torch.rand(10, 2)
    with pytest.raises(ValueError, match="cluster_size"):
        balanced_cluster(pos, 0)
    with pytest.raises(ValueError, match="empty"):
        balanced_cluster(pos, 4, torch.tensor([0] * 5 + [2] * 5))
    with pytest.raises(ValueError, match="empty"):
        balanced_cluster(torch.rand(0, 2), 4)
    with pytest.raises(ValueError, match="extent"):
        balanced_cluster(pos, 4, extent=(1, 1, 1))
    with pytest.raises(ValueError, match=r"\[0, extent\)"):
        balanced_cluster(pos * 3, 4, extent=(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        balanced_cluster(torch.full((3, 2), float("nan")), 4)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        balanced_cluster_dense(pos, 4)
    with pytest.raises(ValueError, match="lengths"):
        balanced_cluster_dense(pos.view(2, 5, 2), 4, lengths=torch.tensor([5, 0]))
