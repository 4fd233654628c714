"""Tests for pointset/nn/local_grouper.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.nn.local_grouper import LocalGrouper


def brute_force_group(xyz, points, groups, k, use_xyz, normalize, alpha, beta):
    """Oracle: PointMLP grouping written with explicit Python loops over plain floats.

    FPS from index 0 (distances initialised to 1e10, first index on ties), kNN by sorting
    (distance, index) pairs, one unbiased std per sample, affine per channel.
    """
    xyz_l, pts_l = xyz.tolist(), points.tolist()
    out_xyz, out_pts = [], []
    for b in range(len(xyz_l)):
        p, f = xyz_l[b], pts_l[b]
        n = len(p)

        def d2(i, j, p=p):
            return sum((p[i][c] - p[j][c]) ** 2 for c in range(len(p[i])))

        chosen, dist, last = [], [1e10] * n, 0
        for _ in range(groups):
            chosen.append(last)
            for j in range(n):
                dist[j] = min(dist[j], d2(j, last))
            best = 0
            for j in range(n):
                if dist[j] > dist[best]:
                    best = j
            last = best
        rows = []
        for a in chosen:
            order = sorted(range(n), key=lambda j, a=a: (d2(a, j), j))[:k]
            feats = []
            for j in order:
                feats.append(f[j] + (p[j] if use_xyz else []))
            rows.append((a, feats))
        if normalize is not None:
            diffs = []
            for a, feats in rows:
                if normalize == "anchor":
                    ref = f[a] + (p[a] if use_xyz else [])
                else:
                    ref = [sum(col) / len(feats) for col in zip(*feats)]
                diffs.append([[v - r for v, r in zip(row, ref)] for row in feats])
            flat = [v for grp in diffs for row in grp for v in row]
            mean = sum(flat) / len(flat)
            std = math.sqrt(sum((v - mean) ** 2 for v in flat) / (len(flat) - 1))
            normed = [
                [[alpha[c] * v / (std + 1e-5) + beta[c] for c, v in enumerate(row)] for row in grp]
                for grp in diffs
            ]
        else:
            normed = [feats for _, feats in rows]
        out_xyz.append([p[a] for a, _ in rows])
        out_pts.append([[row + f[a] for row in grp] for (a, _), grp in zip(rows, normed)])
    return torch.tensor(out_xyz, dtype=torch.float64), torch.tensor(out_pts, dtype=torch.float64)


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 2),
    n=st.integers(4, 14),
    channels=st.integers(1, 3),
    normalize=st.sampled_from(["anchor", "center", None]),
    use_xyz=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_dense_matches_brute_force_loops(batch, n, channels, normalize, use_xyz, seed, data):
    """Oracle: brute_force_group (explicit loops) for every normalisation mode."""
    groups = data.draw(st.integers(1, n))
    k = data.draw(st.integers(1, n))
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(batch, n, 3, generator=gen, dtype=torch.float64)
    points = torch.randn(batch, n, channels, generator=gen, dtype=torch.float64)
    layer = LocalGrouper(channels, groups, k, use_xyz=use_xyz, normalize=normalize).double()
    alpha = beta = [1.0] * (channels + 3 * use_xyz)
    if normalize is not None:
        with torch.no_grad():
            layer.affine_alpha.uniform_(0.5, 1.5, generator=gen)
            layer.affine_beta.uniform_(-0.5, 0.5, generator=gen)
        alpha, beta = layer.affine_alpha.view(-1).tolist(), layer.affine_beta.view(-1).tolist()
    if normalize is not None and groups * k * len(alpha) < 2:
        return  # a single value has no unbiased std (NaN in every implementation)
    new_xyz, new_points = layer.forward_dense(xyz, points)
    exp_xyz, exp_points = brute_force_group(xyz, points, groups, k, use_xyz, normalize, alpha, beta)
    assert new_points.shape == (batch, groups, k, layer.out_channels)
    torch.testing.assert_close(new_xyz, exp_xyz, rtol=0, atol=0)
    torch.testing.assert_close(new_points, exp_points, rtol=1e-9, atol=1e-9)


def test_sample_indices_match_brute_force_fps_and_knn():
    """Oracle: FPS loop from index 0 and sorted-distance kNN written in the test."""
    gen = torch.Generator().manual_seed(3)
    xyz = torch.rand(2, 30, 3, generator=gen)
    layer = LocalGrouper(4, 10, 5)
    fps_idx, knn_idx = layer.sample(xyz)
    for b in range(2):
        dist = torch.full((30,), 1e10)
        last, expected = 0, []
        for _ in range(10):
            expected.append(last)
            dist = torch.minimum(dist, ((xyz[b] - xyz[b, last]) ** 2).sum(-1))
            last = int(dist.argmax())
        assert fps_idx[b].tolist() == expected
        for s, a in enumerate(expected):
            d = ((xyz[b] - xyz[b, a]) ** 2).sum(-1).tolist()
            assert knn_idx[b, s].tolist() == sorted(range(30), key=lambda j, d=d: (d[j], j))[:5]


def _packed_cloud(sizes, channels, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), 3, generator=gen, dtype=dtype)
    x = torch.randn(sum(sizes), channels, generator=gen, dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, pos, batch


@pytest.mark.parametrize("normalize,use_xyz", [("anchor", False), ("center", True), (None, False)])
def test_packed_clouds_of_different_sizes_equal_each_cloud_alone(normalize, use_xyz):
    """Oracle: forward on each cloud alone (per-cloud std, per-cloud indices)."""
    sizes = [13, 21, 9]
    x, pos, batch = _packed_cloud(sizes, 4, seed=0)
    layer = LocalGrouper(4, 6, 5, use_xyz=use_xyz, normalize=normalize).double()
    if normalize is not None:
        with torch.no_grad():
            layer.affine_alpha.uniform_(0.5, 1.5)
            layer.affine_beta.uniform_(-0.5, 0.5)
    out = layer(x, pos, batch)
    assert out.x.shape == (6 * len(sizes), 5, layer.out_channels)
    assert out.batch.tolist() == [b for b in range(len(sizes)) for _ in range(6)]
    start = 0
    for b, n in enumerate(sizes):
        alone = layer(x[start : start + n], pos[start : start + n])
        rows = slice(6 * b, 6 * (b + 1))
        torch.testing.assert_close(out.x[rows], alone.x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.pos[rows], alone.pos, rtol=0, atol=0)
        assert torch.equal(out.anchor_index[rows], alone.anchor_index + start)
        assert torch.equal(out.neighbor_index[rows], alone.neighbor_index + start)
        start += n


def test_packed_equals_dense_for_equal_size_clouds():
    """Oracle: the dense (official-layout) entry on the same clouds."""
    x, pos, batch = _packed_cloud([16, 16], 3, seed=1)
    layer = LocalGrouper(3, 5, 4, use_xyz=True).double()
    with torch.no_grad():
        layer.affine_alpha.uniform_(0.5, 1.5)
        layer.affine_beta.uniform_(-0.5, 0.5)
    packed = layer(x, pos, batch)
    new_xyz, new_points = layer.forward_dense(pos.view(2, 16, 3), x.view(2, 16, 3))
    torch.testing.assert_close(packed.x, new_points.reshape(10, 4, -1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(packed.pos, new_xyz.reshape(10, 3), rtol=0, atol=0)


def test_gradcheck_reaches_affine_parameters():
    """Oracle: finite differences (torch.autograd.gradcheck) w.r.t. points, alpha and beta."""
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 8, 3, generator=gen, dtype=torch.float64)
    points = torch.randn(2, 8, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    layer = LocalGrouper(2, 3, 4).double()
    alpha = torch.rand(1, 1, 1, 2, dtype=torch.float64, generator=gen).requires_grad_()
    beta = torch.rand(1, 1, 1, 2, dtype=torch.float64, generator=gen).requires_grad_()

    class Dense(torch.nn.Module):  # forward_dense as forward, for functional_call
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, xyz, points):
            return self.layer.forward_dense(xyz, points)

    dense = Dense()

    def fn(points, alpha, beta):
        params = {"layer.affine_alpha": alpha, "layer.affine_beta": beta}
        return torch.func.functional_call(dense, params, (xyz, points))[1]

    assert torch.autograd.gradcheck(fn, (points, alpha, beta))
    fn(points, alpha, beta).sum().backward()
    assert alpha.grad.abs().sum() > 0 and beta.grad.abs().sum() > 0


def test_gradcheck_packed_entry():
    """Oracle: finite differences through the scatter-based per-cloud std."""
    x, pos, batch = _packed_cloud([7, 9], 2, seed=4)
    x.requires_grad_()
    layer = LocalGrouper(2, 3, 3).double()
    assert torch.autograd.gradcheck(lambda x: layer(x, pos, batch).x, (x,))


@pytest.mark.parametrize(
    "xyz_shape,points_shape,match",
    [
        ((2, 10, 3), (2, 10, 5), "channels"),
        ((2, 10, 2), (2, 10, 4), "coordinates"),
        ((2, 10), (2, 10, 4), r"shape \[B, N, 3\]"),
        ((2, 10, 3), (2, 9, 4), "agree"),
        ((2, 0, 3), (2, 0, 4), "empty"),
        ((2, 4, 3), (2, 4, 4), "kneighbors=5"),
    ],
)
def test_dense_bad_input_raises_value_error(xyz_shape, points_shape, match):
    """Oracle: the input contract (ValueError naming the problem)."""
    layer = LocalGrouper(4, 3, 5)
    with pytest.raises(ValueError, match=match):
        layer.forward_dense(torch.rand(xyz_shape), torch.rand(points_shape))


def test_packed_bad_input_raises_value_error():
    """Oracle: the packed input contract (ValueError naming the problem)."""
    layer = LocalGrouper(2, 3, 4)
    x, pos, batch = _packed_cloud([6, 3], 2, seed=0, dtype=torch.float32)
    with pytest.raises(ValueError, match="cloud 1 has 3 points"):
        layer(x, pos, batch)
    with pytest.raises(ValueError, match="channels"):
        layer(torch.rand(9, 3), pos)
    with pytest.raises(ValueError, match="coordinates"):
        layer(x, torch.rand(9, 2))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.rand(0, 2), torch.rand(0, 3))
    with pytest.raises(ValueError, match="sorted"):
        layer(x, pos, batch.flip(0))


def test_constructor_rejects_unknown_normalize_and_sizes():
    """Oracle: constructor contract (official code silently ignored unknown modes)."""
    with pytest.raises(ValueError, match="normalize"):
        LocalGrouper(4, 3, 5, normalize="mean")
    with pytest.raises(ValueError, match="kneighbors"):
        LocalGrouper(4, 3, 0)


def test_parameters_follow_official_names_and_shapes():
    """Oracle: the official state-dict listing (affine_alpha/beta of shape [1, 1, 1, C(+3)])."""
    assert {k: tuple(v.shape) for k, v in LocalGrouper(64, 512, 24).state_dict().items()} == {
        "affine_alpha": (1, 1, 1, 64),
        "affine_beta": (1, 1, 1, 64),
    }
    assert LocalGrouper(64, 512, 24, use_xyz=True).affine_alpha.shape == (1, 1, 1, 67)
    assert LocalGrouper(64, 512, 24, normalize=None).state_dict() == {}
