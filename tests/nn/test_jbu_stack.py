"""Tests for pointset/nn/jbu_stack.py.

Oracles: the official FeatUp fixture ``jbu_stack_small.pt`` (output, every step's output,
the mismatched-guidance case, float64 run), the official state-dict listing of
``JBUStack(384)``, ``F.adaptive_avg_pool2d`` (the point pyramid's pooling on a 16x grid),
each cloud run alone (packed batches) and finite differences (gradcheck).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointset.nn import JBUStack

ATOL, RTOL = 5e-5, 1e-5


def _fixture(shared_dir):
    return torch.load(shared_dir / "reference/fixtures/jbu_stack_small.pt", weights_only=True)


def _loaded(data, dtype=torch.float32):
    stack = JBUStack(16).to(dtype).eval()
    stack.load_state_dict(data["state_dict"], strict=True)
    return stack


def _noisy(stack, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.5 * (torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5))
    return stack.eval()


def _pixels(h, w, scale=1.0, dtype=torch.float64):
    """``(row, col)`` centres of an ``h x w`` grid of cells ``scale`` output pixels wide."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).to(dtype)
    return (pos + 0.5) * scale - 0.5


def _packed(t):
    return t.permute(0, 2, 3, 1).reshape(-1, t.size(1))


def test_parameter_count_and_keys_equal_official_listing(shared_dir):
    """Official listing featup_jbu_stack_384.txt: 172,772 parameters, same keys and shapes."""
    listing = (shared_dir / "reference/state_dicts/featup_jbu_stack_384.txt").read_text()
    want = {}
    for line in listing.splitlines()[1:]:
        parts = line.split("\t")
        key, shape = parts[0], parts[-2]
        want[key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    stack = JBUStack(384)
    got = {k: tuple(v.shape) for k, v in stack.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in stack.parameters()) == 172772


def test_float32_output_and_steps_equal_fixture(shared_dir):
    """Official fixture: output and each step's output (3x4 -> 48x64)."""
    data = _fixture(shared_dir)
    stack = _loaded(data)
    steps = []
    hooks = [up.register_forward_hook(lambda m, a, o: steps.append(o)) for up in stack.steps]
    with torch.no_grad():
        out = stack.forward_dense(data["source"], data["guidance"])
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out, data["out"], atol=ATOL, rtol=RTOL)
    for got, want in zip(steps, data["step_outputs"]):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_mismatched_guidance_equals_fixture(shared_dir):
    """Official fixture: a guidance that is not 16x the source; the output is still 16x."""
    data = _fixture(shared_dir)
    with torch.no_grad():
        out = _loaded(data).forward_dense(data["source"], data["mismatch_guidance"])
    assert out.shape == (1, 16, 48, 64)
    torch.testing.assert_close(out, data["mismatch_out"], atol=ATOL, rtol=RTOL)


def test_float64_output_equals_fixture(shared_dir):
    """Official fixture (float64 run): 1e-9."""
    data = _fixture(shared_dir)
    with torch.no_grad():
        stack = _loaded(data, torch.float64)
        out = stack.forward_dense(data["source"].double(), data["guidance"].double())
    torch.testing.assert_close(out, data["out_fp64"], atol=1e-9, rtol=0)


def test_grid_gradcheck():
    """Finite differences (float64, fast mode) through all four steps and the fixup."""
    stack = _noisy(JBUStack(2, key_dim=4).double())
    source = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    guidance = torch.randn(1, 3, 20, 30, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stack.forward_dense, (source, guidance), fast_mode=True)


def test_point_pyramid_pools_like_adaptive_avg_pool():
    """F.adaptive_avg_pool2d: on a guidance 16x the source, the point levels are the pooled
    pixels (positions at the pooled cell centres, mean guidance)."""
    stack = JBUStack(2)
    guidance = torch.randn(1, 3, 32, 48, dtype=torch.float64)
    levels = stack.pyramid(_packed(guidance), _pixels(32, 48), None, torch.tensor([16.0]))
    for k, level in enumerate(levels, start=1):
        h, w = 2 * 2**k, 3 * 2**k
        order = torch.argsort(level.pos[:, 0] * 1000 + level.pos[:, 1])
        torch.testing.assert_close(level.pos[order], _pixels(h, w, 16 / 2**k))
        pooled = _packed(F.adaptive_avg_pool2d(guidance, (h, w)))
        torch.testing.assert_close(level.guidance[order], pooled, atol=1e-12, rtol=0)


def test_point_path_on_grid_runs_and_batch_equals_single():
    """Each cloud run alone: a batch of two frames (one shifted, different sizes) gives
    the same rows; output has one row per output point."""
    stack = _noisy(JBUStack(4).double())
    g = torch.Generator().manual_seed(0)
    xs, ps, gs, qs, b, bo = [], [], [], [], [], []
    for k, (h, w) in enumerate([(2, 3), (3, 2)]):
        xs.append(torch.randn(h * w, 4, generator=g, dtype=torch.float64))
        ps.append(_pixels(h, w, 16.0) + 100 * k)
        qs.append(_pixels(16 * h, 16 * w) + 100 * k)
        gs.append(torch.randn(qs[-1].size(0), 3, generator=g, dtype=torch.float64))
        b.append(torch.full((h * w,), k))
        bo.append(torch.full((qs[-1].size(0),), k))
    x, pos, guid, q, b, bo = (torch.cat(t) for t in (xs, ps, gs, qs, b, bo))
    with torch.no_grad():
        out = stack(x, pos, b, guidance=guid, pos_out=q, batch_out=bo)
        alone = [
            stack(x[b == k], pos[b == k], guidance=guid[bo == k], pos_out=q[bo == k])
            for k in range(2)
        ]
    assert out.shape == (q.size(0), 4)
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-12, rtol=0)


def test_point_gradcheck():
    """Finite differences (float64, fast mode) of the point path w.r.t. features/guidance."""
    stack = _noisy(JBUStack(2, guidance_dim=2, key_dim=4).double())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    pos = _pixels(2, 2, 16.0)
    q = torch.rand(200, 2, generator=g, dtype=torch.float64) * 32 - 0.5
    guid = torch.randn(200, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, c: stack(a, pos, guidance=c, pos_out=q), (x, guid), fast_mode=True
    )


def test_bad_input_raises():
    """Entry-point checks name the problem."""
    stack = JBUStack(4)
    with pytest.raises(ValueError, match="same batch size"):
        stack.forward_dense(torch.randn(2, 4, 2, 2), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="in_channels=4"):
        stack.forward_dense(torch.randn(1, 5, 2, 2), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 2x2"):
        stack.forward_dense(torch.randn(1, 4, 1, 2), torch.randn(1, 3, 32, 32))
    x, pos, g, q = torch.randn(4, 4), torch.rand(4, 2), torch.randn(50, 3), torch.rand(50, 2)
    with pytest.raises(ValueError, match="larger than the output"):
        stack(g.new_zeros(50, 4), q, guidance=g[:4], pos_out=pos)
    with pytest.raises(ValueError, match="NaN"):
        stack(x, pos.clone().fill_(float("nan")), guidance=g, pos_out=q)
    with pytest.raises(ValueError, match="empty"):
        stack(x[:0], pos[:0], guidance=g, pos_out=q)
    with pytest.raises(ValueError, match="guidance_dim=3"):
        stack(x, pos, guidance=torch.randn(50, 2), pos_out=q)


def test_repr():
    """The constructor arguments appear in the repr."""
    assert repr(JBUStack(8)) == "JBUStack(in_channels=8, guidance_dim=3, steps=4)"
