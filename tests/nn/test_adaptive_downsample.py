"""Tests of pointset/nn/adaptive_downsample.py (AFF ClusterMerging)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from pointset.nn.adaptive_downsample import AdaptiveDownsample
from pointset.ops.cluster_neighbourhood import cluster_neighbourhood, nearest_other_distance


def lattice(h: int, w: int, dim: int = 2) -> torch.Tensor:
    axes = [torch.arange(s) for s in ((h, w) if dim == 2 else (h, w, w))]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], -1)
    return grid.reshape(-1, dim).float()


def randomise(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    return layer


def plain_selection(pos, importance, ratio, alpha, stride, adaptive):
    """Kept tokens written out: all reserved ones, then the best others by prior + alpha s."""
    n = pos.size(0)
    keep = int(n * ratio)
    if adaptive:
        d = torch.cdist(pos.double(), pos.double()).fill_diagonal_(float("inf")).amin(1)
        spacing = [2.0 ** (torch.ceil(torch.log2(v)).item() + 1) for v in d]
    else:
        spacing = [stride] * n
    reserved = [i for i in range(n) if all(float(c) % (2 * stride) == 0 for c in pos[i])]
    score = {
        i: float(all(float(c) % spacing[i] == 0 for c in pos[i]))
        + alpha * float(importance[i].detach())
        for i in range(n)
        if i not in reserved
    }
    ranked = sorted(score, key=lambda i: (-score[i], i))
    return ranked[: keep - len(reserved)] + reserved


def plain_merge(layer, x, pos, importance, kept, index, mask):
    """PointConv merge of every kept token c: sum_j GELU(LN(U phi(p_j - p_c))) s_j m_j x_j
    per weight channel, channels concatenated (weight channel outer), then LN and Linear."""
    rows = []
    for c in kept:
        nbr = index[c]
        delta = (pos[nbr] - pos[c]).to(x.dtype)
        r = delta.norm(dim=-1, keepdim=True)
        unit = torch.where(r > 0, delta / r.clamp_min(1e-30), torch.zeros_like(delta))
        feats = torch.cat([delta, r, unit.flip(-1)], -1)
        real = torch.ones(len(nbr)) if mask is None else mask[c].to(x.dtype)
        w = layer.weight_net(feats) * (importance[nbr] * real).unsqueeze(1)  # [M, 4]
        rows.append((w.t() @ x[nbr]).flatten())
    return layer.linear(layer.norm(torch.stack(rows)))


@pytest.mark.parametrize("adaptive", [False, True])
def test_dense_equals_plain_selection_and_merge(adaptive):
    """Oracle: plain_selection + plain_merge on a 10x10 lattice with a padded last cluster."""
    torch.manual_seed(0)
    layer = randomise(AdaptiveDownsample(6, 5, cluster_size=8, nbhd_size=16))
    pos = lattice(10, 10).unsqueeze(0)
    if adaptive:  # an irregular token set: drop every third token
        pos = pos[:, torch.arange(100) % 3 != 1]
    n = pos.size(1)
    x = torch.randn(1, n, 6)
    nbhd = cluster_neighbourhood(pos, 8, 16, extent=(10, 10))
    assert nbhd.mask is not None or n % 8 == 0
    importance = torch.sigmoid(layer.prob_net(x))
    out = layer.forward_dense(x, pos, nbhd, stride=2, adaptive_prior=adaptive)
    kept = plain_selection(pos[0], importance[0, :, 0], 0.25, 4.0, 2, adaptive)
    assert out.index[0].tolist() == kept
    assert torch.equal(out.pos[0], pos[0, kept])
    expected = plain_merge(
        layer,
        x[0],
        pos[0],
        importance[0, :, 0],
        kept,
        nbhd.index[0],
        None if nbhd.mask is None else nbhd.mask[0],
    )
    torch.testing.assert_close(out.x[0], expected, atol=1e-5, rtol=1e-5)


def test_keeps_exactly_int_n_rate_and_every_reserved_token():
    """Oracle: counting on lattices (reserved = both coordinates multiples of 2 * stride)."""
    torch.manual_seed(1)
    layer = AdaptiveDownsample(4, 4, ratio=0.25)
    sizes = [(16, 16), (12, 10), (7, 9)]
    pos = torch.cat([lattice(h, w) for h, w in sizes])
    counts = [h * w for h, w in sizes]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    _, new_pos, new_batch, perm = layer(
        torch.randn(pos.size(0), 4), pos, batch, adaptive_prior=False
    )
    assert torch.bincount(new_batch).tolist() == [int(n * 0.25) for n in counts]
    assert torch.equal(new_pos, pos[perm])
    for b in range(3):
        kept = set(map(tuple, new_pos[new_batch == b].tolist()))
        cloud = pos[batch == b]
        reserved = {tuple(p) for p in cloud.tolist() if p[0] % 4 == 0 and p[1] % 4 == 0}
        assert reserved <= kept
        assert len(kept) == int(cloud.size(0) * 0.25)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 1.0])
def test_keep_count_and_reserved_tokens_on_irregular_clouds(dim, ratio):
    """Oracle: counting on random subsets of integer lattices (packed, unequal sizes):
    exactly int(n * ratio) distinct tokens per cloud, every reserved token among them."""
    g = torch.Generator().manual_seed(int(ratio * 10) + dim)
    side = 12 if dim == 2 else 6
    full = lattice(side, side, dim)
    clouds = [full[torch.randperm(full.size(0), generator=g)[:n]] for n in (100, 61, 37)]
    pos, sizes = torch.cat(clouds), [c.size(0) for c in clouds]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    layer = AdaptiveDownsample(3, 4, pos_dim=dim, ratio=ratio, cluster_size=4, nbhd_size=12)
    x = torch.randn(pos.size(0), 3, generator=g)
    _, new_pos, new_batch, perm = layer(x, pos, batch)
    assert torch.bincount(new_batch, minlength=3).tolist() == [int(n * ratio) for n in sizes]
    assert torch.equal(new_pos, pos[perm])
    for b in range(3):
        kept = perm[new_batch == b].tolist()
        assert len(set(kept)) == len(kept)
        assert all(int(batch[i]) == b for i in kept)
        reserved = ((pos % 4 == 0).all(1) & (batch == b)).nonzero().flatten().tolist()
        assert set(reserved) <= set(kept)


def test_adaptive_prior_on_full_lattice_equals_stride_rule():
    """Oracle: the fixed stride-2 rule; on a full unit lattice every token's nearest
    neighbour is at distance 1, so the adaptive stride is 2 everywhere."""
    pos = lattice(9, 7)
    assert torch.equal(nearest_other_distance(pos.unsqueeze(0)), torch.ones(1, 63))
    layer = AdaptiveDownsample(3, 3)
    x = torch.randn(63, 3)
    a = layer(x, pos, adaptive_prior=False)
    b = layer(x, pos, adaptive_prior=True)
    assert torch.equal(a[3], b[3])
    torch.testing.assert_close(a[0], b[0])


def test_packed_clouds_of_different_sizes_equal_each_cloud_alone():
    """Oracle: the same layer on each cloud alone."""
    torch.manual_seed(2)
    layer = randomise(AdaptiveDownsample(4, 6, cluster_size=4, nbhd_size=12))
    clouds = [lattice(8, 8), lattice(6, 5), lattice(4, 4)[torch.arange(16) != 5]]
    pos = torch.cat(clouds)
    x = torch.randn(pos.size(0), 4)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([c.size(0) for c in clouds]))
    out, new_pos, new_batch, perm = layer(x, pos, batch, adaptive_prior=True)
    start = 0
    for b, cloud in enumerate(clouds):
        n = cloud.size(0)
        alone = layer(x[start : start + n], cloud, adaptive_prior=True)
        torch.testing.assert_close(out[new_batch == b], alone[0], atol=1e-6, rtol=1e-6)
        assert torch.equal(perm[new_batch == b] - start, alone[3])
        start += n


def test_three_d_positions_run_and_keep_the_count():
    """Oracle: counting on a 3-D lattice (reserved = all three coordinates multiples of 4)."""
    pos = lattice(8, 8, dim=3)
    layer = AdaptiveDownsample(5, 7, pos_dim=3)
    x, new_pos, _, _ = layer(torch.randn(512, 5), pos, adaptive_prior=False)
    assert x.shape == (128, 7)
    kept = set(map(tuple, new_pos.tolist()))
    assert {p for p in map(tuple, pos.tolist()) if all(c % 4 == 0 for c in p)} <= kept


def test_gradcheck_reaches_importance_head_and_weight_net():
    """Oracle: finite differences (gradcheck, float64) for the features, the importance head
    (trained only through the merge weights) and the merge weight network."""
    torch.manual_seed(3)
    layer = AdaptiveDownsample(3, 4, cluster_size=4, nbhd_size=8).double()
    pos = lattice(3, 5).double().unsqueeze(0)  # 15 tokens: the last cluster is padded
    nbhd = cluster_neighbourhood(pos, 4, 8, extent=(5, 3))
    assert nbhd.mask is not None
    names = ["prob_net.weight", "prob_net.bias", "weight_net.0.weight"]
    params = {k: v.detach().clone().requires_grad_() for k, v in layer.named_parameters()}
    layer.forward = lambda x, p: layer.forward_dense(x, p, nbhd, adaptive_prior=False).x

    def run(x, *tensors):
        return functional_call(layer, dict(params, **dict(zip(names, tensors))), (x, pos))

    x = torch.randn(1, 15, 3, dtype=torch.float64, requires_grad=True)
    inputs = (x, *(params[k] for k in names))
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)
    run(*inputs).sum().backward()
    for k in names:
        assert params[k].grad.abs().sum() > 0, k


def test_bad_input_raises_value_error():
    """Oracle: the documented error cases."""
    layer = AdaptiveDownsample(4, 4)
    pos = lattice(4, 4)
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(16, 3), pos)
    with pytest.raises(ValueError, match="coordinates"):
        layer(torch.randn(16, 4), torch.rand(16, 3))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, 4), torch.rand(0, 2))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(16, 4), pos, torch.tensor([0] * 8 + [2] * 8))
    with pytest.raises(ValueError, match="keeps none"):
        layer(torch.randn(3, 4), pos[:3] + 1)
    with pytest.raises(ValueError, match="reserved"):
        layer(torch.randn(16, 4), pos, stride=0.5)
    with pytest.raises(ValueError, match="ratio"):
        AdaptiveDownsample(4, 4, ratio=0.0)
    with pytest.raises(ValueError, match="score_net"):
        AdaptiveDownsample(4, 4, score_net=False)(torch.randn(16, 4), pos)
