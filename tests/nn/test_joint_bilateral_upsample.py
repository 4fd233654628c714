"""Tests for pointset/nn/joint_bilateral_upsample.py (and the window sums of _windows.py).

Oracles: the official FeatUp fixture ``jbu_small.pt`` (outputs, intermediates, gradients,
float64 run), a naive ``F.unfold`` re-statement of the reference semantics written here
(any size), finite differences (gradcheck), the layer's own grid path (interior pixels of
the point path on a full grid), each cloud run alone (packed batches) and hand-built
lattice offsets (the point windows).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointset.nn import JointBilateralUpsample

ATOL, RTOL = 5e-5, 1e-5


def _fixture(shared_dir):
    return torch.load(shared_dir / "reference/fixtures/jbu_small.pt", weights_only=True)


def _noisy(layer: JointBilateralUpsample, seed: int = 0) -> JointBilateralUpsample:
    """Perturb every parameter so that the fixup and the range kernel matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * (torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5))
    return layer.eval()


def _naive(layer: JointBilateralUpsample, source, guidance):
    """The reference semantics with full unfolds (small inputs only)."""
    b, _, hh, ww = guidance.shape
    r, d = layer.radius, layer.diameter
    keys = layer.range_proj(guidance)
    win = F.unfold(F.pad(keys, [r] * 4, mode="reflect"), d).view(b, keys.size(1), d * d, hh, ww)
    rng = torch.softmax(layer._temperature() * (win * keys.unsqueeze(2)).sum(1), 1)
    t = torch.linspace(-1, 1, d, dtype=source.dtype)
    spatial = torch.exp(-(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / (2 * layer.sigma_spatial**2))
    comb = rng * spatial.view(1, -1, 1, 1)
    comb = comb / comb.sum(1, keepdim=True).clamp(min=1e-7)
    kernel = comb + 0.1 * layer.fixup_proj(torch.cat([comb, guidance], 1))
    hr = F.interpolate(source, (hh, ww), mode="bicubic", align_corners=False)
    feats = F.unfold(F.pad(hr, [r] * 4, mode="reflect"), d).view(b, -1, d * d, hh, ww)
    return (feats * kernel.unsqueeze(1)).sum(2)


def _grid_points(h, w, batch=1, dtype=torch.float64):
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).to(dtype)
    return pos.repeat(batch, 1), torch.arange(batch).repeat_interleave(h * w)


def _packed(t):
    """``[B, C, H, W]`` -> ``[B*H*W, C]`` row-major."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.size(1))


# ----------------------------------------------------------------------------- fixture
def test_state_dict_loads_strict_and_keys(shared_dir):
    """Official fixture: the 10 keys and shapes of JBULearnedRange load with strict=True."""
    data = _fixture(shared_dir)
    layer = JointBilateralUpsample(3, 16)
    layer.load_state_dict(data["state_dict"], strict=True)
    assert list(layer.state_dict()) == list(data["state_dict"])
    assert sum(p.numel() for p in layer.parameters()) == 6233


def test_float32_outputs_and_intermediates_equal_fixture(shared_dir):
    """Official fixture (float32): output, spatial/range kernels, final filter."""
    data = _fixture(shared_dir)
    layer = JointBilateralUpsample(3, 16).eval()
    layer.load_state_dict(data["state_dict"])
    with torch.no_grad():
        out = layer.forward_dense(data["source"], data["guidance"])
        kernel = layer.grid_kernel(data["guidance"])
        rng = layer.grid_range_kernel(data["guidance"])
    torch.testing.assert_close(out, data["out"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(rng, data["range_kernel"], atol=ATOL, rtol=RTOL)
    ref_kernel = data["kernel"].flatten(-2).permute(0, 3, 1, 2)
    torch.testing.assert_close(kernel, ref_kernel, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(
        layer.spatial_kernel().view(1, -1, 1, 1), data["spatial_kernel"], atol=1e-7, rtol=0
    )


def test_float64_output_equals_fixture(shared_dir):
    """Official fixture (float64 run): 1e-9; the spatial kernel follows the module dtype."""
    data = _fixture(shared_dir)
    layer = JointBilateralUpsample(3, 16).double().eval()
    layer.load_state_dict(data["state_dict"])
    assert layer.spatial_kernel().dtype == torch.float64
    with torch.no_grad():
        out = layer.forward_dense(data["source"].double(), data["guidance"].double())
    torch.testing.assert_close(out, data["out_fp64"], atol=1e-9, rtol=0)


def test_gradients_equal_fixture(shared_dir):
    """Official fixture: gradients of sum(out * grad_R) w.r.t. inputs and every parameter."""
    data = _fixture(shared_dir)
    layer = JointBilateralUpsample(3, 16).eval()
    layer.load_state_dict(data["state_dict"])
    source = data["source"].clone().requires_grad_()
    guidance = data["guidance"].clone().requires_grad_()
    (layer.forward_dense(source, guidance) * data["grad_R"]).sum().backward()
    got = {"grad_source": source.grad, "grad_guidance": guidance.grad}
    got.update({f"param {k}": p.grad for k, p in layer.named_parameters()})
    want = {"grad_source": data["grad_source"], "grad_guidance": data["grad_guidance"]}
    want.update({f"param {k}": v for k, v in data["grad_params"].items()})
    for key, ref in want.items():
        atol = 1e-4 * float(ref.abs().max())
        torch.testing.assert_close(got[key], ref, atol=atol, rtol=1e-4, msg=key)


# ----------------------------------------------------------------------------- grid path
@pytest.mark.parametrize("src,out", [((5, 3), (13, 9)), ((4, 4), (7, 11)), ((3, 5), (6, 10))])
def test_grid_any_size_equals_naive_unfold(src, out):
    """Naive unfold formulation: non-square, odd, non-multiple sizes, float64."""
    torch.manual_seed(0)
    layer = _noisy(JointBilateralUpsample(3, 4).double())
    source = torch.randn(2, 4, *src, dtype=torch.float64)
    guidance = torch.randn(2, 3, *out, dtype=torch.float64)
    with torch.no_grad():
        got = layer.forward_dense(source, guidance)
        want = _naive(layer, source, guidance)
    assert got.shape == (2, 4, *out)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_grid_gradcheck():
    """Finite differences (float64): source, guidance, range_temp and sigma_spatial."""
    torch.manual_seed(0)
    layer = _noisy(JointBilateralUpsample(2, 2, key_dim=4).double())
    source = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    guidance = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    params = (layer.range_temp, layer.sigma_spatial)
    layer.forward = layer.forward_dense  # functional_call invokes forward

    def f(s, g, temp, sigma):
        state = {"range_temp": temp, "sigma_spatial": sigma}
        return torch.func.functional_call(layer, state, (s, g), strict=False)

    assert torch.autograd.gradcheck(f, (source, guidance, *params))


def test_train_mode_dropout_is_random_and_eval_is_not():
    """Upstream semantics: Dropout2d(0.1) in the two MLPs is active in train mode only."""
    torch.manual_seed(0)
    layer = JointBilateralUpsample(3, 4, key_dim=64)
    source, guidance = torch.randn(1, 4, 4, 4), torch.randn(1, 3, 8, 8)
    layer.eval()
    assert torch.equal(layer.forward_dense(source, guidance), layer.forward_dense(source, guidance))
    layer.train()
    assert not torch.equal(
        layer.forward_dense(source, guidance), layer.forward_dense(source, guidance)
    )


# ----------------------------------------------------------------------------- point path
def test_point_windows_on_lattice_are_the_grid_taps():
    """Hand-built lattice offsets: an interior pixel's slots are the 7x7 taps, in the
    documented order (dy^2 + dx^2, dy, dx), and slot_to_tap maps them to row-major taps."""
    layer = JointBilateralUpsample(3, 2)
    pos, _ = _grid_points(11, 12)
    index, off = layer.point_windows(pos)
    i = 5 * 12 + 6  # pixel (5, 6)
    got = (pos[index[i]] - pos[i]).long()
    r = torch.arange(-3, 4)
    taps = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).view(-1, 2)
    torch.testing.assert_close(got, taps[layer.slot_to_tap])
    torch.testing.assert_close(off[i], got.double())
    assert layer.slot_to_tap[0] == 24 and layer.slot_to_tap[1:5].tolist() == [17, 23, 25, 31]


def test_point_path_equals_grid_path_on_interior_pixels():
    """The grid path (itself checked against FeatUp): on a full grid, with the same bicubic
    features, every pixel at least r from the border is equal; border pixels differ
    (nearest pixels instead of reflect padding)."""
    torch.manual_seed(0)
    layer = _noisy(JointBilateralUpsample(3, 5).double())
    source = torch.randn(2, 5, 5, 7, dtype=torch.float64)
    guidance = torch.randn(2, 3, 13, 17, dtype=torch.float64)
    with torch.no_grad():
        grid = layer.forward_dense(source, guidance)
        hr = F.interpolate(source, (13, 17), mode="bicubic", align_corners=False)
        pos, batch = _grid_points(13, 17, 2)
        pts = layer.filter_points(_packed(hr), _packed(guidance), pos, batch)
    pts = pts.view(2, 13, 17, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(pts[..., 3:-3, 3:-3], grid[..., 3:-3, 3:-3], atol=1e-12, rtol=0)
    assert float((pts - grid).abs().max()) > 1e-3  # the borders do differ


def _clouds(dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    sizes = [(9, 60), (4, 30), (12, 80)]  # cloud 1 is smaller than the 49-point window
    xs, ps, gs, qs, b, bo = [], [], [], [], [], []
    for k, (m, n) in enumerate(sizes):
        xs.append(torch.randn(m, 4, generator=g, dtype=dtype))
        ps.append(torch.rand(m, 3, generator=g, dtype=dtype))
        gs.append(torch.randn(n, 3, generator=g, dtype=dtype))
        qs.append(torch.rand(n, 3, generator=g, dtype=dtype))
        b.append(torch.full((m,), k))
        bo.append(torch.full((n,), k))
    return [torch.cat(t) for t in (xs, ps, gs, qs, b, bo)], sizes


def test_point_batch_equals_clouds_one_at_a_time():
    """Each cloud run alone: the packed batch gives the same rows (3-D, irregular, a cloud
    smaller than the window)."""
    layer = _noisy(JointBilateralUpsample(3, 4).double())
    (x, pos, g, q, b, bo), sizes = _clouds()
    with torch.no_grad():
        out = layer(x, pos, b, guidance=g, pos_out=q, batch_out=bo)
        alone = [
            layer(x[b == k], pos[b == k], guidance=g[bo == k], pos_out=q[bo == k])
            for k in range(len(sizes))
        ]
    assert out.shape == (q.size(0), 4)
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-12, rtol=0)


def test_point_interpolation_reproduces_source_at_source_points():
    """Hand-computed: an output point on a source point takes that point's features, and a
    point halfway between two sources (interp_k=2) takes their mean."""
    layer = JointBilateralUpsample(1, 2, interp_k=2)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, 0.0]])
    pos = torch.tensor([[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]])
    q = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    got = layer.interpolate_points(x, pos, q)
    torch.testing.assert_close(got, torch.tensor([[3.0, 6.0], [2.0, 4.0]]))


def test_point_gradcheck():
    """Finite differences (float64) of the point path w.r.t. features and guidance."""
    layer = _noisy(JointBilateralUpsample(2, 2, key_dim=4).double())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.rand(5, 2, generator=g, dtype=torch.float64)
    guid = torch.randn(30, 2, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.rand(30, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, c: layer(a, pos, guidance=c, pos_out=q), (x, guid))


# ----------------------------------------------------------------------------- errors
def test_bad_grid_input_raises():
    """Entry-point checks name the problem."""
    layer = JointBilateralUpsample(3, 4)
    s, g = torch.randn(2, 4, 4, 4), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="same batch size"):
        layer.forward_dense(s, g[:1])
    with pytest.raises(ValueError, match="in_channels=4"):
        layer.forward_dense(torch.randn(2, 5, 4, 4), g)
    with pytest.raises(ValueError, match="guidance_dim=3"):
        layer.forward_dense(s, torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="larger than the output"):
        layer.forward_dense(torch.randn(2, 4, 9, 4), g)
    with pytest.raises(ValueError, match="exceed the radius"):
        layer.forward_dense(torch.randn(2, 4, 2, 2), torch.randn(2, 3, 3, 8))
    with pytest.raises(ValueError, match=r"source must have shape \[B, C, H, W\]"):
        layer.forward_dense(torch.randn(4, 4, 4), g)


def test_bad_point_input_raises():
    """Entry-point checks name the problem (empty clouds, NaN, sizes, channels)."""
    layer = JointBilateralUpsample(3, 4)
    x, pos, g, q = torch.randn(5, 4), torch.rand(5, 2), torch.randn(60, 3), torch.rand(60, 2)
    b, bo = torch.zeros(5, dtype=torch.long), torch.zeros(60, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        layer(x, pos.clone().fill_(float("nan")), guidance=g, pos_out=q)
    with pytest.raises(ValueError, match="NaN"):
        bad = q.clone()
        bad[3, 1] = float("nan")
        layer(x, pos, guidance=g, pos_out=bad)
    with pytest.raises(ValueError, match="empty clouds"):
        layer(x, pos, b, guidance=g, pos_out=q, batch_out=torch.cat([bo[:30], bo[30:] + 2]))
    with pytest.raises(ValueError, match="empty"):
        layer(x[:0], pos[:0], guidance=g, pos_out=q)
    with pytest.raises(ValueError, match="larger than the output"):
        layer(g.new_zeros(60, 4), q, guidance=g[:5], pos_out=pos)
    with pytest.raises(ValueError, match="in_channels=4"):
        layer(torch.randn(5, 3), pos, guidance=g, pos_out=q)
    with pytest.raises(ValueError, match="guidance_dim=3"):
        layer(x, pos, guidance=torch.randn(60, 2), pos_out=q)
    with pytest.raises(ValueError, match=r"one row per pos_out"):
        layer(x, pos, guidance=g[:7], pos_out=q)
    with pytest.raises(ValueError, match="clouds"):
        layer(x, pos, b, guidance=g, pos_out=q, batch_out=torch.cat([bo[:30], bo[30:] + 1]))
    with pytest.raises(ValueError, match="same number of coordinates"):
        layer(x, torch.rand(5, 3), guidance=g, pos_out=q)


def test_repr_and_reset():
    """reset_parameters restores FeatUp's initial temperature and sigma."""
    layer = _noisy(JointBilateralUpsample(3, 8))
    layer.reset_parameters()
    assert layer.range_temp.item() == 0.0 and layer.sigma_spatial.item() == 1.0
    assert (
        repr(layer) == "JointBilateralUpsample(guidance_dim=3, in_channels=8, key_dim=32, radius=3)"
    )
