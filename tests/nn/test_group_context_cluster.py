"""Tests for pointset/nn/group_context_cluster.py."""

from __future__ import annotations

import pytest
import torch

from pointset.nn.group_context_cluster import GroupContextCluster


def _layer(dim, heads=1, head_dim=None, seed=0):
    layer = GroupContextCluster(dim, heads=heads, head_dim=head_dim).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.sim_alpha.uniform_(0.5, 1.5, generator=gen)
        layer.sim_beta.uniform_(-0.5, 0.5, generator=gen)
    return layer


def loop_oracle(layer, members):
    """Oracle: one group ``members [k, C]`` computed member by member with explicit loops."""
    k = members.size(0)
    h, d = layer.heads, layer.head_dim
    feats = [layer.fc1(members[i]).view(h, d) for i in range(k)]
    values = [layer.fc_v(members[i]).view(h, d) for i in range(k)]
    out = []
    per_head = []
    for head in range(h):
        center = sum(f[head] for f in feats) / k
        value_center = sum(v[head] for v in values) / k
        sims = []
        for i in range(k):
            f = feats[i][head]
            cos = (center * f).sum() / (center.norm() * f.norm())
            sims.append(torch.sigmoid(layer.sim_beta + layer.sim_alpha * cos)[0])
        agg = (sum(s * v[head] for s, v in zip(sims, values)) + value_center) / (sum(sims) + 1)
        per_head.append([agg * s for s in sims])
    for i in range(k):
        y = torch.cat([per_head[head][i] for head in range(h)])
        out.append(members[i] + layer.fc2(y))
    return torch.stack(out)


@pytest.mark.parametrize("heads,head_dim", [(1, None), (2, 5)])
def test_dense_matches_member_loop(heads, head_dim):
    """Oracle: loop_oracle (cos, sigmoid, (sum s v + vc) / (sum s + 1), y = out * s, fc2)."""
    layer = _layer(12, heads, head_dim)
    x = torch.randn(4, 12, 7, dtype=torch.float64)  # [G, C, k]
    out = layer.forward_dense(x)
    assert out.shape == x.shape
    for g in range(4):
        torch.testing.assert_close(out[g].t(), loop_oracle(layer, x[g].t()))


def test_grouped_entry_equals_dense_for_shuffled_equal_groups():
    """Oracle: the dense entry; the grouped entry gets the same groups in shuffled order."""
    layer = _layer(8, heads=2, head_dim=4)
    x = torch.randn(5, 8, 6, dtype=torch.float64)
    dense = layer.forward_dense(x).transpose(1, 2).reshape(30, 8)
    group = torch.arange(5).repeat_interleave(6)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    packed = x.transpose(1, 2).reshape(30, 8)
    out = layer(packed[perm], None, group[perm])
    torch.testing.assert_close(out, dense[perm])


def test_grouped_entry_handles_unequal_groups():
    """Oracle: loop_oracle on every group alone."""
    layer = _layer(6)
    sizes = [3, 7, 1]
    x = torch.randn(sum(sizes), 6, dtype=torch.float64)
    group = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    out = layer(x, None, group)
    start = 0
    for n in sizes:
        torch.testing.assert_close(out[start : start + n], loop_oracle(layer, x[start : start + n]))
        start += n


def test_gradcheck_reaches_sim_alpha_and_beta():
    """Oracle: finite differences (torch.autograd.gradcheck) w.r.t. x, sim_alpha, sim_beta."""
    layer = _layer(4, head_dim=3)
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)

    dense = _DenseCall(layer)

    def fn(x, alpha, beta):
        params = {"layer.sim_alpha": alpha, "layer.sim_beta": beta}
        return torch.func.functional_call(dense, params, (x,))

    assert torch.autograd.gradcheck(fn, (x, alpha, beta))


class _DenseCall(torch.nn.Module):
    """Calls ``layer.forward_dense`` from ``forward``, for torch.func.functional_call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.forward_dense(x)


class _Grouped(torch.nn.Module):
    """Calls the layer with the group as ``batch``, for torch.func.functional_call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, group):
        return self.layer(x, None, group)


def test_gradcheck_grouped_entry_reaches_sim_alpha_and_beta():
    """Oracle: finite differences through the scatter-based entry."""
    wrapper = _Grouped(_layer(4, head_dim=3))
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    group = torch.tensor([0, 1, 0, 1, 1])
    alpha = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)

    def fn(x, alpha, beta):
        params = {"layer.sim_alpha": alpha, "layer.sim_beta": beta}
        return torch.func.functional_call(wrapper, params, (x, group))

    assert torch.autograd.gradcheck(fn, (x, alpha, beta))


def test_official_names_and_head_dim():
    """Oracle: PointMLP-CoC listing (fc1 [32, 128], fc2 [128, 32], fc_v, sim_alpha/beta [1])."""
    layer = GroupContextCluster(128)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert list(shapes) == [
        "sim_alpha",
        "sim_beta",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc_v.weight",
        "fc_v.bias",
    ]
    assert shapes["fc1.weight"] == (32, 128) and shapes["fc2.weight"] == (128, 32)
    assert GroupContextCluster(1024).head_dim == 256
    assert layer.sim_alpha.tolist() == [1.0] and layer.sim_beta.tolist() == [0.0]


def test_bad_input_raises_value_error():
    """Oracle: the input contract (ValueError naming the problem)."""
    layer = GroupContextCluster(8)
    with pytest.raises(ValueError, match=r"\[G, 8, k\]"):
        layer.forward_dense(torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        layer(torch.randn(5, 6), None, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="group"):
        layer(torch.randn(5, 8), None, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, 8), None, torch.zeros(0, dtype=torch.long))


def test_packed_clouds_of_different_sizes_equal_each_cloud_alone():
    """Oracle: each cloud alone. Clouds of 13, 21 and 9 points are grouped by
    LocalGrouper.forward (4 groups of 5 per cloud); the grouped entry on all groups
    at once equals the grouped entry and the dense entry on each cloud's groups alone."""
    from pointset.nn.local_grouper import LocalGrouper

    sizes = [13, 21, 9]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(sum(sizes), 6, generator=gen, dtype=torch.float64)
    pos = torch.rand(sum(sizes), 3, generator=gen, dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    grouper = LocalGrouper(6, 4, 5).double()
    layer = _layer(12, heads=2, head_dim=3)
    groups = grouper(x, pos, batch).x  # [12, 5, 12]
    members = groups.reshape(-1, 12)
    together = layer(members, None, torch.arange(12).repeat_interleave(5))
    start = 0
    for b, n in enumerate(sizes):
        alone = grouper(x[start : start + n], pos[start : start + n]).x
        rows = slice(20 * b, 20 * (b + 1))
        by_group = layer(alone.reshape(-1, 12), None, torch.arange(4).repeat_interleave(5))
        torch.testing.assert_close(together[rows], by_group, rtol=1e-12, atol=1e-12)
        dense = layer.forward_dense(alone.transpose(1, 2)).transpose(1, 2).reshape(-1, 12)
        torch.testing.assert_close(together[rows], dense, rtol=1e-12, atol=1e-12)
        start += n
