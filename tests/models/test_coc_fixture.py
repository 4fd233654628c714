"""Tests for pointset/models/coc.py against the official Context-Cluster model.

Oracle: the official outputs stored in the coc_mini fixture (embedding, every
``network[j]`` output, logits in float32 and float64; also reached through the point-set
path). The state-dict listings are checked in test_state_dicts.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from pointset import from_image
from pointset.models.coc import (
    ContextClusterNet,
    coc_tiny,
)


@pytest.fixture(scope="module")
def fixture(shared_dir):
    path = shared_dir / "reference" / "fixtures" / "coc_mini.pt"
    if not path.is_file():
        pytest.skip(f"{path.name} is absent")
    return torch.load(path, weights_only=True)


def _model(fixture, dtype=torch.float32) -> ContextClusterNet:
    config = json.loads(fixture["config_json"])
    assert config.pop("norm_layer") == "GroupNorm"
    model = ContextClusterNet(**config).to(dtype).eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    return model


def test_grid_path_reproduces_official_stage_outputs_and_logits(fixture):
    model = _model(fixture)
    with torch.no_grad():
        x = model.forward_embeddings(fixture["input"])
        torch.testing.assert_close(x, fixture["embed_output"], atol=1e-5, rtol=0)
        for j, module in enumerate(model.network):
            x = getattr(module, "forward_dense", module)(x)  # reducers: the dense entry
            torch.testing.assert_close(x, fixture["stage_outputs"][j], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(fixture["input"]), fixture["logits"], atol=1e-5, rtol=0)


def test_float64_reproduces_official_float64_logits(fixture):
    model = _model(fixture, torch.float64)
    with torch.no_grad():
        logits = model(fixture["input"].double())
    torch.testing.assert_close(logits, fixture["logits_fp64"], atol=1e-10, rtol=0)


def test_point_path_reproduces_official_logits(fixture):
    """The general path with the official fold regions (all pixels kept) on the fixture."""
    model = _model(fixture)
    with torch.no_grad():
        logits = model.forward_points(from_image(fixture["input"]), plan="grid")
    torch.testing.assert_close(logits, fixture["logits"], atol=1e-5, rtol=0)


def test_fork_feat_returns_four_normalised_stage_maps():
    """Oracle: the official feature-pyramid layout (norm0/2/4/6, strides 4, 8, 16, 32)."""
    model = ContextClusterNet(
        [1, 1, 1, 1], [8, 16, 24, 32], [2, 2, 2, 2], [True] * 4,
        fold_w=[2, 1, 1, 1], fold_h=[2, 1, 1, 1], heads=[1] * 4, head_dim=[4] * 4,
        fork_feat=True,
    )  # fmt: skip
    assert {"norm0.weight", "norm6.bias"} <= set(model.state_dict())
    assert "head.weight" not in model.state_dict()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (1, 8, 16, 16),
        (1, 16, 8, 8),
        (1, 24, 4, 4),
        (1, 32, 2, 2),
    ]


def test_bad_image_raises_value_error():
    model = coc_tiny(num_classes=3)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(1, 4, 64, 64))
