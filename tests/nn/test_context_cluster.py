"""Tests for pointset/nn/context_cluster.py (and the plans of pointset/nn/cluster_plan.py).

Oracles: a naive per-region / per-point Python-loop re-statement of the paper's formula
written here, the layer's own grid path (for the point path given the grid plan), each
cloud run alone (for packed batches), and finite differences (gradcheck).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pointset.nn import ClusterPlan, ContextCluster, grid_plan, point_plan
from pointset.nn.cluster_plan import adaptive_windows

# (H, W, proposal_w, proposal_h, fold_w, fold_h): divisible, overlapping windows in regions,
# unfolded with overlapping windows, fold only on one axis (= unfolded), uneven proposals
CONFIGS = [
    (8, 8, 2, 2, 2, 2),
    (14, 14, 2, 2, 2, 2),
    (7, 7, 2, 2, 1, 1),
    (6, 10, 2, 3, 2, 1),
    (6, 10, 2, 3, 2, 2),
]


class _DenseCall(torch.nn.Module):
    """Calls ``layer.forward_dense`` from ``forward`` (for ``torch.func.functional_call``)."""

    def __init__(self, layer: ContextCluster) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.forward_dense(x)


def _layer(dim=6, heads=2, head_dim=3, *, config=(8, 8, 2, 2, 2, 2), dtype=torch.float64, **kw):
    _, _, pw, ph, fw, fh = config
    torch.manual_seed(0)
    layer = ContextCluster(
        dim,
        heads=heads,
        head_dim=head_dim,
        proposal_w=pw,
        proposal_h=ph,
        fold_w=fw,
        fold_h=fh,
        **kw,
    ).to(dtype)
    with torch.no_grad():  # away from the (1, 0) init so that both scalars matter
        layer.sim_alpha.fill_(1.7)
        layer.sim_beta.fill_(-0.4)
    return layer


def _window(n: int, p: int, i: int) -> tuple[int, int]:
    return math.floor(i * n / p), math.ceil((i + 1) * n / p)


def _normalize(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm().clamp_min(1e-12)


def naive_grid_reference(layer: ContextCluster, x: torch.Tensor) -> torch.Tensor:
    """The paper's clustering, region by region and point by point, in plain Python loops."""
    b_, _, h_, w_ = x.shape
    e, d = layer.heads, layer.head_dim
    f = torch.einsum("oc,bchw->bohw", layer.f.weight[:, :, 0, 0], x) + layer.f.bias.view(
        1, -1, 1, 1
    )
    v = torch.einsum("oc,bchw->bohw", layer.v.weight[:, :, 0, 0], x) + layer.v.bias.view(
        1, -1, 1, 1
    )
    folded = layer.fold_w > 1 and layer.fold_h > 1
    fw, fh = (layer.fold_w, layer.fold_h) if folded else (1, 1)
    rh, rw = h_ // fw, w_ // fh
    pw, ph = layer.proposal_w, layer.proposal_h
    alpha, beta = layer.sim_alpha[0], layer.sim_beta[0]
    out = torch.zeros(b_, e * d, h_, w_, dtype=x.dtype)
    for b in range(b_):
        for head in range(e):
            ch = slice(head * d, (head + 1) * d)
            for i in range(fw):
                for j in range(fh):
                    rs, cs = slice(i * rh, (i + 1) * rh), slice(j * rw, (j + 1) * rw)
                    fr, vr = f[b, ch, rs, cs], v[b, ch, rs, cs]
                    centers, vcenters = [], []
                    for a in range(pw):
                        r0, r1 = _window(rh, pw, a)
                        for c in range(ph):
                            c0, c1 = _window(rw, ph, c)
                            centers.append(fr[:, r0:r1, c0:c1].mean(dim=(1, 2)))
                            vcenters.append(vr[:, r0:r1, c0:c1].mean(dim=(1, 2)))
                    members = [[] for _ in centers]
                    for r in range(rh):
                        for c in range(rw):
                            p = _normalize(fr[:, r, c])
                            sims = [
                                torch.sigmoid(beta + alpha * (p * _normalize(ck)).sum())
                                for ck in centers
                            ]
                            best = max(range(len(sims)), key=lambda k, s=sims: float(s[k]))
                            members[best].append((r, c, sims[best]))
                    for m, group in enumerate(members):
                        num, den = vcenters[m].clone(), 1.0
                        for r, c, s in group:
                            num = num + s * vr[:, r, c]
                            den = den + (s if layer.denominator == "sim" else 1.0)
                        for r, c, s in group:
                            out[b, ch, i * rh + r, j * rw + c] = s * num / den
    return F.conv2d(out, layer.proj.weight, layer.proj.bias)


def naive_point_reference(layer, x, pos, centers, center_k, candidates):
    """One cloud: centers pooled from their k nearest points, each point assigned to the most
    similar of its nearest centers, loops over heads, centers and points."""
    e, d = layer.heads, layer.head_dim
    f = x @ layer.f.weight[:, :, 0, 0].T + layer.f.bias
    v = x @ layer.v.weight[:, :, 0, 0].T + layer.v.bias
    alpha, beta = layer.sim_alpha[0], layer.sim_beta[0]
    y = torch.zeros(x.size(0), e * d, dtype=x.dtype)
    pool = [torch.sort(((pos - c) ** 2).sum(1), stable=True).indices[:center_k] for c in centers]
    cands = [
        torch.sort(((centers - p) ** 2).sum(1), stable=True).indices[:candidates].tolist()
        for p in pos
    ]
    for head in range(e):
        ch = slice(head * d, (head + 1) * d)
        fc = [f[idx, ch].mean(0) for idx in pool]
        vc = [v[idx, ch].mean(0) for idx in pool]
        assigned = []
        for i in range(x.size(0)):
            p = _normalize(f[i, ch])
            sims = [torch.sigmoid(beta + alpha * (p * _normalize(fc[m])).sum()) for m in cands[i]]
            best = max(range(len(sims)), key=lambda k, s=sims: float(s[k]))
            assigned.append((cands[i][best], sims[best]))
        for m in range(len(centers)):
            group = [(i, s) for i, (mm, s) in enumerate(assigned) if mm == m]
            num = vc[m] + sum((s * v[i, ch] for i, s in group), torch.zeros(d, dtype=x.dtype))
            g = num / (1.0 + sum(float(0) + s for _, s in group))
            for i, s in group:
                y[i, ch] = s * g
    return y @ layer.proj.weight[:, :, 0, 0].T + layer.proj.bias


def _packed(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.size(1))


# --------------------------------------------------------------------------- grid path


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("denominator", ["sim", "count"])
def test_grid_path_equals_naive_loop_reference(config, denominator):
    layer = _layer(config=config, denominator=denominator)
    x = torch.randn(2, 6, config[0], config[1], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            layer.forward_dense(x), naive_grid_reference(layer, x), atol=1e-12, rtol=0
        )


def test_adaptive_windows_match_adaptive_avg_pool():
    """Oracle: torch's adaptive_avg_pool1d on an indicator of each cell."""
    for size in range(1, 12):
        for parts in range(1, size + 1):
            eye = torch.eye(size, dtype=torch.float64).unsqueeze(0)
            pooled = F.adaptive_avg_pool1d(eye, parts)[0]  # [size(cell), parts]
            for k, (s, t) in enumerate(adaptive_windows(size, parts)):
                members = (pooled[:, k] > 0).nonzero().view(-1).tolist()
                assert members == list(range(s, t))


# --------------------------------------------------------------------------- point path == grid path


@pytest.mark.parametrize("config", CONFIGS)
def test_point_path_with_grid_plan_equals_grid_path_forward_and_backward(config):
    h, w = config[:2]
    layer = _layer(dim=16, heads=2, head_dim=8, config=config, dtype=torch.float32)
    x = torch.randn(2, 16, h, w)
    xi = x.clone().requires_grad_()
    xp = _packed(x).clone().requires_grad_()
    params = list(layer.parameters())

    yi = layer.forward_dense(xi)
    yp = layer(xp, plan=grid_plan(2, h, w, *config[2:]))
    torch.testing.assert_close(yp, _packed(yi), atol=1e-5, rtol=0)

    weight = torch.randn_like(yp)
    gi = torch.autograd.grad((_packed(yi) * weight).sum(), [xi, *params])
    gp = torch.autograd.grad((yp * weight).sum(), [xp, *params])
    torch.testing.assert_close(gp[0], _packed(gi[0]), atol=1e-5, rtol=0)
    for a, b, (name, _) in zip(gi[1:], gp[1:], layer.named_parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=name)
        assert a.abs().sum() > 0, name


def test_grid_plan_structure():
    """Oracle: hand-counted plan of one 4x6 map, folds 2x2, 2x3 proposals (1-cell windows)."""
    plan = grid_plan(1, 4, 6, proposal_w=2, proposal_h=3, fold_w=2, fold_h=2)
    assert plan.num_centers == 4 * 6
    # point (row 1, col 4) lies in region (0, 1), local cell (1, 1): center 6 + 1*3 + 1 = 10
    point = 1 * 6 + 4
    pool = plan.pool_index
    assert pool[1][pool[0] == point].tolist() == [10]
    cand = plan.cand_index
    assert cand[1][cand[0] == point].tolist() == list(range(6, 12))
    assert plan.center_pos[10].tolist() == [1.0, 4.0]


def test_packed_grid_size_equals_image_path():
    """Oracle: the [B, C, H, W] path, per image; grid_size as (H, W), [2] and [B, 2] with
    clouds of different grid sizes."""
    layer = _layer(config=(8, 8, 2, 2, 2, 2))
    a = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    b = torch.randn(1, 6, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        ya, yb = _packed(layer.forward_dense(a)), _packed(layer.forward_dense(b))
        torch.testing.assert_close(layer(_packed(a), grid_size=(8, 8)), ya)
        torch.testing.assert_close(layer(_packed(a), grid_size=torch.tensor([8, 8])), ya)
        mixed = torch.cat([_packed(a), _packed(b)])
        grid = torch.tensor([[8, 8], [8, 8], [4, 6]])
        torch.testing.assert_close(layer(mixed, grid_size=grid), torch.cat([ya, yb]))


# --------------------------------------------------------------------------- general point path


@pytest.mark.parametrize("dim", [2, 3])
def test_point_path_equals_naive_loop_reference(dim):
    torch.manual_seed(1)
    layer = _layer(dim=5, heads=2, head_dim=4, num_centers=6, center_k=5, candidates=3)
    x = torch.randn(40, 5, dtype=torch.float64)
    pos = torch.rand(40, dim, dtype=torch.float64)
    plan = layer.plan(pos)
    with torch.no_grad():
        expected = naive_point_reference(layer, x, pos, plan.center_pos, 5, 3)
        torch.testing.assert_close(layer(x, pos), expected, atol=1e-12, rtol=0)
        # caller-chosen centers
        centers = torch.rand(7, dim, dtype=torch.float64)
        expected = naive_point_reference(layer, x, pos, centers, 5, 3)
        torch.testing.assert_close(layer(x, pos, centers=centers), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_packed_batch_equals_each_cloud_alone(dim):
    torch.manual_seed(2)
    layer = _layer(dim=5, heads=3, head_dim=2, num_centers=4, center_k=6, candidates=2)
    sizes = [25, 61, 9]
    xs = [torch.randn(n, 5, dtype=torch.float64) for n in sizes]
    ps = [torch.rand(n, dim, dtype=torch.float64) for n in sizes]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    with torch.no_grad():
        together = layer(torch.cat(xs), torch.cat(ps), batch)
        alone = torch.cat([layer(x, p) for x, p in zip(xs, ps)])
    torch.testing.assert_close(together, alone, atol=1e-12, rtol=0)

    ratio_layer = _layer(dim=5, heads=1, head_dim=4, center_ratio=0.3, center_k=3, candidates=2)
    with torch.no_grad():
        together = ratio_layer(torch.cat(xs), torch.cat(ps), batch)
        alone = torch.cat([ratio_layer(x, p) for x, p in zip(xs, ps)])
    torch.testing.assert_close(together, alone, atol=1e-12, rtol=0)


def test_plan_reuse_equals_fresh_plan():
    """Oracle: the forward that builds its own plan."""
    layer = _layer(dim=4, num_centers=3, center_k=4, candidates=2)
    x, pos = torch.randn(30, 4, dtype=torch.float64), torch.rand(30, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, pos, plan=layer.plan(pos)), layer(x, pos))


# --------------------------------------------------------------------------- gradients


def test_gradcheck_reaches_sim_alpha_and_beta():
    """Oracle: finite differences (float64) for x, sim_alpha and sim_beta on both paths."""
    layer = _layer(dim=4, heads=2, head_dim=3, config=(6, 6, 2, 2, 1, 1))
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    alpha = layer.sim_alpha.detach().clone().requires_grad_()
    beta = layer.sim_beta.detach().clone().requires_grad_()
    plan = layer.grid_plan(1, 6, 6)

    dense = _DenseCall(layer)

    def grid(x, a, b):
        params = {"layer.sim_alpha": a, "layer.sim_beta": b}
        return torch.func.functional_call(dense, params, (x,))

    def points(x, a, b):
        args = (_packed(x),)
        return torch.func.functional_call(
            layer, {"sim_alpha": a, "sim_beta": b}, args, {"plan": plan}
        )

    assert torch.autograd.gradcheck(grid, (x, alpha, beta), fast_mode=True)
    assert torch.autograd.gradcheck(points, (x, alpha, beta), fast_mode=True)
    ga, gb = torch.autograd.grad(grid(x, alpha, beta).square().sum(), [alpha, beta])
    assert ga.abs() > 0 and gb.abs() > 0


def test_gradcheck_general_path_reaches_sim_alpha_and_beta():
    """Oracle: finite differences (float64) through the general path on two 3-D clouds of
    unequal size, FPS centers, kNN pooling and candidates (the plan is fixed geometry)."""
    layer = _layer(dim=3, heads=2, head_dim=2, num_centers=3, center_k=4, candidates=2)
    gen = torch.Generator().manual_seed(0)  # nearest candidates differ in cos by > 3e-3
    pos = torch.rand(17, 3, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0] * 10 + [1] * 7)
    x = torch.randn(17, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    alpha = layer.sim_alpha.detach().clone().requires_grad_()
    beta = layer.sim_beta.detach().clone().requires_grad_()

    plan = layer.plan(pos, batch)  # built once: finite differences only move features

    def run(x, a, b):
        params = {"sim_alpha": a, "sim_beta": b}
        return torch.func.functional_call(layer, params, (x,), {"plan": plan})

    assert torch.autograd.gradcheck(run, (x, alpha, beta))
    ga, gb = torch.autograd.grad(run(x, alpha, beta).square().sum(), [alpha, beta])
    assert ga.abs() > 0 and gb.abs() > 0


# --------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1], CONFIGS[3]])
def test_returned_grid_assignment_equals_point_path_with_grid_plan(config):
    """Oracle: the point path given grid_plan, whose center ids the grid path must reuse;
    asking for the assignment leaves the output unchanged."""
    h, w = config[:2]
    layer = _layer(config=config)
    x = torch.randn(2, 6, h, w, dtype=torch.float64)
    with torch.no_grad():
        plain = layer.forward_dense(x)
        recorded, grid_ids = layer.forward_dense(x, return_assignment=True)
        _, plan_ids = layer(_packed(x), plan=layer.grid_plan(2, h, w), return_assignment=True)
    assert torch.equal(plain, recorded)
    assert grid_ids.shape == (2 * h * w, layer.heads) and grid_ids.dtype == torch.long
    assert torch.equal(grid_ids, plan_ids)


def test_returned_assignment_is_a_candidate_of_every_point():
    """Oracle: the plan's candidate edges (general path) and the per-image grid assignment
    renumbered after the previous images (packed grids of two sizes)."""
    layer = _layer(dim=6, num_centers=5, center_k=4, candidates=3)
    x, pos = torch.randn(40, 6, dtype=torch.float64), torch.rand(40, 3, dtype=torch.float64)
    plan = layer.plan(pos)
    with torch.no_grad():
        out, ids = layer(x, plan=plan, return_assignment=True)
        assert torch.equal(out, layer(x, plan=plan))
    cands = {(int(p), int(c)) for p, c in plan.cand_index.t()}
    assert all((i, int(ids[i, e])) in cands for i in range(40) for e in range(layer.heads))

    a = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    b = torch.randn(1, 6, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        _, alone_b = layer.forward_dense(b, return_assignment=True)
        packed = torch.cat([_packed(a), _packed(b)])
        _, ids = layer(packed, grid_size=torch.tensor([[8, 8], [4, 6]]), return_assignment=True)
    assert torch.equal(ids[64:], alone_b + 16)  # image a has 4 x 4 centers


def test_reset_parameters_restores_alpha_one_beta_zero():
    layer = _layer()
    layer.reset_parameters()
    assert layer.sim_alpha.item() == 1.0 and layer.sim_beta.item() == 0.0
    assert [k for k, _ in layer.named_parameters()] == [
        "sim_alpha",
        "sim_beta",
        "f.weight",
        "f.bias",
        "proj.weight",
        "proj.bias",
        "v.weight",
        "v.bias",
    ]
    assert layer.f.weight.shape == (6, 6, 1, 1)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    layer = _layer(dim=6, num_centers=4, center_k=4, candidates=2)
    x, pos = torch.randn(20, 6), torch.rand(20, 3)
    layer = layer.float()
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(20, 5), pos)
    with pytest.raises(ValueError, match="channels"):
        layer.forward_dense(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match="pos must have shape"):
        layer(x, torch.rand(20))
    with pytest.raises(ValueError, match="pos must have shape"):
        layer(x, torch.rand(19, 3))
    with pytest.raises(ValueError, match="coordinates"):
        layer(x, pos, centers=torch.rand(5, 2))
    with pytest.raises(ValueError, match="center_batch together with batch"):
        layer(x, pos, torch.tensor([0] * 10 + [1] * 10), centers=torch.rand(5, 3))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, 6), torch.rand(0, 3))
    with pytest.raises(ValueError, match="empty"):
        layer.forward_dense(torch.randn(1, 6, 0, 8))
    with pytest.raises(ValueError, match="cloud 1 .*empty"):
        layer(x, pos, torch.tensor([0] * 10 + [2] * 10))
    with pytest.raises(ValueError, match="fewer than center_k"):
        layer(x, pos, torch.tensor([0] * 17 + [1] * 3))
    with pytest.raises(ValueError, match="divisible"):
        layer.forward_dense(torch.randn(1, 6, 7, 8))
    with pytest.raises(ValueError, match="whole"):
        layer(x, grid_size=(3, 3))
    with pytest.raises(ValueError, match="no candidate"):
        plan = ClusterPlan(torch.tensor([[0], [0]]), torch.tensor([[0], [0]]), 1)
        layer(x, plan=plan)
    with pytest.raises(ValueError, match="forward_dense"):
        layer(torch.randn(1, 6, 8, 8), pos)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        layer.forward_dense(x)
    with pytest.raises(ValueError, match="heads"):
        ContextCluster(6, heads=0)
    with pytest.raises(ValueError, match="denominator"):
        ContextCluster(6, denominator="mean")


def test_lattice_plan_picks_the_grid_plan_only_for_whole_row_major_images():
    """Oracle: grid_plan for whole row-major images; point_plan with the grid path's density
    (16 centers per 8x8 image, FPS ratio 16/64) for a partial image or a shuffled order."""
    layer = ContextCluster(4, heads=1, head_dim=4, fold_w=2, fold_h=2, center_k=4)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    cells = torch.stack([rows.flatten(), cols.flatten()], 1).repeat(2, 1)
    batch = torch.arange(2).repeat_interleave(64)
    plan = layer.lattice_plan(cells, batch, (8, 8))
    expected = layer.grid_plan(2, 8, 8)
    assert torch.equal(plan.pool_index, expected.pool_index)
    assert torch.equal(plan.cand_index, expected.cand_index)

    fps = layer.lattice_plan(cells, batch, (8, 8), mode="fps")
    assert fps.num_centers == 32 and fps.cand_index.size(1) == 128 * 4
    keep = torch.ones(128, dtype=torch.bool)
    keep[5] = False
    partial = layer.lattice_plan(cells[keep], batch[keep], (8, 8))
    reference = point_plan(
        cells[keep].float(), batch[keep], center_ratio=16 / 64 * (1 - 1e-9), center_k=4
    )
    assert torch.equal(partial.pool_index, reference.pool_index)
    assert torch.equal(partial.cand_index, reference.cand_index)
    perm = torch.cat([torch.arange(64).flip(0), torch.arange(64, 128)])
    assert layer.lattice_plan(cells[perm], batch, (8, 8)).num_centers == 16 + 16
    assert not torch.equal(
        layer.lattice_plan(cells[perm], batch, (8, 8)).cand_index, plan.cand_index
    )
    with pytest.raises(ValueError, match="grid plan needs whole images"):
        layer.lattice_plan(cells[perm], batch, (8, 8), mode="grid")
    with pytest.raises(ValueError, match="mode"):
        layer.lattice_plan(cells, batch, (8, 8), mode="kmeans")
