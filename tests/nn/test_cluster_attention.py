"""Tests of pointset/nn/cluster_attention.py (and the helpers in nn/_aff_geometry.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import pointset.nn._aff_geometry as geometry
from pointset.nn._aff_geometry import rel_pos_features
from pointset.nn.cluster_attention import ClusterAttention, cluster_neighbourhood
from pointset.ops.balanced_cluster import balanced_cluster
from pointset.ops.cluster_neighbourhood import knn_lowest_index, nearest_other_distance


def plain_neighbourhood(pos: torch.Tensor, m: int, nbhd: int):
    """Neighbourhoods written out: the members of the nnc nearest cluster means (float32
    square-root distance, ties to the lower cluster id); padding -> first-ranked point."""
    n = pos.size(0)
    cl = balanced_cluster(pos, m)
    k = cl.centers.size(0)
    nnc = min(round(nbhd / m), k)
    members = [cl.perm[c * m : (c + 1) * m].tolist() for c in range(k)]
    index, mask = [], []
    p32, c32 = pos.float(), cl.centers.float()
    for i in range(n):
        dist = [float(((p32[i] - c32[c]) ** 2).sum().sqrt()) for c in range(k)]
        near = sorted(range(k), key=lambda c: (dist[c], c))[:nnc]
        row, row_mask = [], []
        for c in near:
            pad = m - len(members[c])
            row += members[c] + [int(cl.perm[0])] * pad
            row_mask += [True] * len(members[c]) + [False] * pad
        index.append(row)
        mask.append(row_mask)
    return torch.tensor(index), torch.tensor(mask)


def plain_attention(layer: ClusterAttention, x, pos, index, mask=None):
    """Dense softmax attention over given neighbourhoods, one query and head at a time."""
    n, channels = x.shape
    heads = layer.heads
    c = channels // heads
    q = layer.q(x) * c**-0.5
    kv = layer.kv(x)
    out = torch.zeros_like(x)
    for i in range(n):
        nbr = index[i]
        delta = (pos[nbr] - pos[i]).to(x.dtype)
        r = delta.norm(dim=-1, keepdim=True)
        unit = torch.where(r > 0, delta / r.clamp_min(1e-30), torch.zeros_like(delta))
        feats = torch.cat([delta, r, unit.flip(-1)], -1)
        for h in range(heads):
            qh = q[i, h * c : (h + 1) * c]
            keys = kv[nbr, 2 * h * c : 2 * h * c + c]
            values = kv[nbr, 2 * h * c + c : 2 * (h + 1) * c]
            logits = keys @ qh + feats @ layer.pos_embed.weight[h] + layer.pos_embed.bias[h]
            if mask is not None:
                logits = logits - 100.0 * (~mask[i]).to(x.dtype)
            blank = qh @ layer.blank_k[h * c : (h + 1) * c]
            p = torch.softmax(torch.cat([logits, blank.view(1)]), 0)
            out[i, h * c : (h + 1) * c] = (
                p[:-1] @ values + p[-1] * layer.blank_v[h * c : (h + 1) * c]
            )
    return layer.proj(out)


def randomise(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    return layer


@pytest.mark.parametrize("dim", [2, 3])
def test_neighbourhood_equals_plain_nearest_cluster_members(dim):
    """Oracle: plain_neighbourhood (written-out nearest-cluster rule)."""
    g = torch.Generator().manual_seed(dim)
    pos = torch.randint(0, 12, (61, dim), generator=g).float()  # integer: many exact ties
    got = cluster_neighbourhood(pos.unsqueeze(0), 8, 24, per_cloud=True)
    index, mask = plain_neighbourhood(pos, 8, 24)
    assert torch.equal(got.index[0], index)
    assert torch.equal(got.mask[0], mask)
    assert got.exclude is None


@pytest.mark.parametrize("dim, n, nbhd", [(2, 45, 16), (3, 45, 16), (2, 30, 48), (2, 64, 20)])
def test_forward_equals_plain_softmax_attention(dim, n, nbhd):
    """Oracle: plain_attention over plain_neighbourhood (global when nbhd >= n), 1e-5."""
    torch.manual_seed(0)
    layer = randomise(ClusterAttention(8, heads=2, cluster_size=8, nbhd_size=nbhd, pos_dim=dim))
    x, pos = torch.randn(n, 8), torch.rand(n, dim) * 6
    if nbhd >= n:
        index, mask = torch.arange(n).expand(n, n), None
    else:
        index, mask = plain_neighbourhood(pos, 8, nbhd)
    expected = plain_attention(layer, x, pos, index, mask)
    torch.testing.assert_close(layer(x, pos), expected, atol=1e-5, rtol=1e-5)


def test_packed_clouds_of_different_sizes_equal_each_cloud_alone():
    """Oracle: the same layer on each cloud alone (including one global-attention cloud)."""
    torch.manual_seed(1)
    layer = randomise(ClusterAttention(8, heads=2, cluster_size=4, nbhd_size=12))
    sizes = [30, 9, 17]
    x = torch.randn(sum(sizes), 8)
    pos = torch.rand(sum(sizes), 2) * 5
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    out = layer(x, pos, batch)
    start = 0
    for n in sizes:
        alone = layer(x[start : start + n], pos[start : start + n])
        torch.testing.assert_close(out[start : start + n], alone, atol=1e-6, rtol=1e-6)
        start += n


def test_edge_index_path_equals_plain_attention():
    """Oracle: plain_attention over the explicit neighbour lists of a random graph."""
    torch.manual_seed(2)
    layer = randomise(ClusterAttention(6, heads=3, pos_dim=3))
    n, deg = 20, 5
    x, pos = torch.randn(n, 6), torch.rand(n, 3)
    index = torch.stack([torch.randperm(n)[:deg] for _ in range(n)])
    edge_index = torch.stack([index.flatten(), torch.arange(n).repeat_interleave(deg)])
    expected = plain_attention(layer, x, pos, index)
    torch.testing.assert_close(layer(x, pos, edge_index=edge_index), expected, atol=1e-5, rtol=1e-5)


def test_rel_pos_features_equal_reference_lookup_table():
    """Oracle: the reference's table over integer offsets, entry (dy + w) * (2w + 1) + dx + w
    holding (dx, dy, r, dy / r, dx / r) with the origin's NaN set to 0."""
    w = 6
    width = 2 * w + 1
    table = torch.zeros(width * width, 5)
    for dy in range(-w, w + 1):
        for dx in range(-w, w + 1):
            r = (dy * dy + dx * dx) ** 0.5
            sin = dy / r if r else 0.0
            cos = dx / r if r else 0.0
            table[(dy + w) * width + dx + w] = torch.tensor([dx, dy, r, sin, cos])
    delta = torch.randint(-w, w + 1, (500, 2)).float()
    lookup = table[((delta[:, 1] + w) * width + delta[:, 0] + w).long()]
    torch.testing.assert_close(rel_pos_features(delta), lookup, atol=1e-7, rtol=1e-6)
    three = rel_pos_features(torch.tensor([[0.0, 3.0, 4.0]], dtype=torch.float64))
    assert three.tolist() == [[0.0, 3.0, 4.0, 5.0, 0.8, 0.6, 0.0]]


def test_gradcheck_reaches_inputs_blank_token_and_bias_linear():
    """Oracle: finite differences (torch.autograd.gradcheck, float64) through the chunked
    gather kernels, for x and the blank key/value and position-bias parameters."""
    torch.manual_seed(3)
    layer = ClusterAttention(4, heads=2, cluster_size=4, nbhd_size=8).double()
    pos = torch.rand(1, 14, 2, dtype=torch.float64) * 4  # 4 clusters, the last one padded
    nbhd = cluster_neighbourhood(pos, 4, 8)
    assert nbhd.mask is not None
    names = ["blank_k", "blank_v", "pos_embed.weight", "pos_embed.bias"]
    params = {k: v.detach().clone().requires_grad_() for k, v in layer.named_parameters()}

    layer.forward = layer.forward_dense  # functional_call invokes forward

    def run(x, *tensors):
        return functional_call(layer, dict(params, **dict(zip(names, tensors))), (x, pos, nbhd))

    x = torch.randn(1, 14, 4, dtype=torch.float64, requires_grad=True)
    inputs = (x, *(params[k] for k in names))
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)
    run(*inputs).square().sum().backward()
    for k in names:
        assert params[k].grad.abs().sum() > 0, k


def test_chunked_kernels_equal_unchunked(monkeypatch):
    """Oracle: the same computation in one chunk; forward and gradients agree."""
    torch.manual_seed(4)
    layer = randomise(ClusterAttention(8, heads=2, cluster_size=8, nbhd_size=24))
    x, pos = torch.randn(100, 8, requires_grad=True), torch.rand(100, 2)

    def run():
        x.grad = None
        layer.zero_grad()
        out = layer(x, pos)
        out.square().sum().backward()
        return out.detach(), x.grad.clone(), layer.kv.weight.grad.clone()

    whole = run()
    monkeypatch.setattr(geometry, "CHUNK_ELEMENTS", 200)
    chunked = run()
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_knn_ties_go_to_lowest_index():
    """Oracle: hand-made equidistant points; ties rank by index, invalid points never."""
    points = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -1.0]]])
    query = torch.zeros(1, 1, 2)
    assert knn_lowest_index(query, points, 4).tolist() == [[[3, 0, 1, 2]]]
    valid = torch.tensor([[True, False, True, True, True]])
    assert knn_lowest_index(query, points, 4, valid).tolist() == [[[3, 0, 2, 4]]]


@pytest.mark.parametrize("dim, lattice", [(2, True), (2, False), (3, True), (3, False)])
def test_pruned_searches_equal_brute_force(dim, lattice):
    """Oracle: brute-force knn_lowest_index over all cluster means, and the brute-force
    nearest-other distance; the neighbourhood searches prune by the triangle inequality."""
    g = torch.Generator().manual_seed(dim + 2 * lattice)
    if lattice:
        pos = torch.randint(0, 30, (2, 700, dim), generator=g).float()
    else:
        pos = torch.rand(2, 700, dim, generator=g) ** 3 * 30  # uneven density
    lengths = [700, 555]
    nbhd = cluster_neighbourhood(pos, 8, 48, lengths=lengths, per_cloud=True)
    for b, n in enumerate(lengths):
        cl = balanced_cluster(pos[b, :n], 8)
        near = knn_lowest_index(pos[b : b + 1, :n], cl.centers.unsqueeze(0), 6)[0]
        members = [cl.perm[cl.cluster[cl.perm] == c] for c in range(cl.centers.size(0))]
        for i in range(0, n, 37):
            expected = torch.cat([members[c] for c in near[i].tolist()])
            got = nbhd.index[b, i][nbhd.mask[b, i]] if nbhd.mask is not None else nbhd.index[b, i]
            assert torch.equal(got, expected)
    dist = nearest_other_distance(pos, torch.tensor(lengths), nbhd)
    for b, n in enumerate(lengths):
        diff = pos[b, :n, None, :] - pos[b, None, :n, :]
        sq = diff[..., 0] * diff[..., 0]
        for c in range(1, dim):
            sq = sq + diff[..., c] * diff[..., c]
        plain = sq.sqrt().fill_diagonal_(float("inf")).amin(1)
        assert torch.equal(dist[b, :n], plain)


def test_bad_input_raises_value_error():
    """Oracle: the documented error cases."""
    layer = ClusterAttention(8, heads=2)
    pos = torch.rand(20, 2)
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(20, 6), pos)
    with pytest.raises(ValueError, match="coordinates"):
        layer(torch.randn(20, 8), torch.rand(20, 3))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, 8), torch.rand(0, 2))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(20, 8), pos, torch.tensor([0] * 10 + [2] * 10))
    with pytest.raises(ValueError, match="rows"):
        layer(torch.randn(19, 8), pos)
    with pytest.raises(ValueError, match=r"\[0, extent\)"):
        layer(torch.randn(20, 8), pos * 10, extent=(5, 5))
    with pytest.raises(ValueError, match="divide"):
        ClusterAttention(8, heads=3)
    with pytest.raises(ValueError, match="rounds to 0"):
        ClusterAttention(8, heads=2, cluster_size=8, nbhd_size=3)
    assert math.isclose(layer.scale, 4**-0.5)
