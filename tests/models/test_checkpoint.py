"""Tests for pointset/models/checkpoint.py (oracle: the model's own state dict, saved in
each official layout and read back)."""

from __future__ import annotations

import argparse
import os
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pointset.models import create_model
from pointset.models.checkpoint import CheckpointError, load_checkpoint, read_state_dict


def small_coc(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(
        "coc_tiny",
        num_classes=5,
        layers=[1, 1, 1, 1],
        embed_dims=[8, 8, 8, 8],
        heads=[1, 1, 1, 1],
        head_dim=[4, 4, 4, 4],
    )


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def source():
    return small_coc(seed=1)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"net": sd, "best_test_acc": 85.4},
        lambda sd: {"model": {"state_dict": sd}},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": {"module._orig_mod." + k: v for k, v in sd.items()}},
    ],
    ids=["plain", "state_dict", "model", "net", "nested", "module_prefix", "nested_prefixes"],
)
def test_wrapper_forms_load_from_torch_file(tmp_path, source, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(source.state_dict()), path)
    target = small_coc(seed=2)
    result = load_checkpoint(target, path)
    assert result.missing_keys == result.unexpected_keys == result.converted_keys == []
    assert_same_weights(source, target)


def test_safetensors_file_loads_with_any_suffix(tmp_path, source):
    for name in ("w.safetensors", "w.bin"):
        save_file(source.state_dict(), tmp_path / name)
        target = small_coc(seed=2)
        load_checkpoint(target, tmp_path / name)
        assert_same_weights(source, target)


def test_training_metadata_of_official_files_is_read_as_plain_data(tmp_path, source):
    # timm scripts store argparse arguments, pointMLP numpy accuracies, AFF a yacs CfgNode.
    config_module = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config_module.CfgNode = CfgNode
    sys.modules.update({"yacs": types.ModuleType("yacs"), "yacs.config": config_module})
    try:
        torch.save(
            {
                "args": argparse.Namespace(model="coc_tiny", lr=1e-3),
                "acc": np.float64(85.2),
                "config": CfgNode(MODEL=CfgNode(NAME="aff_mini")),
                "model": source.state_dict(),
            },
            tmp_path / "official.pth",
        )
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]
    target = small_coc(seed=2)
    load_checkpoint(target, tmp_path / "official.pth")
    assert_same_weights(source, target)


def test_old_detection_checkpoint_with_4d_mlp_weights_is_converted(tmp_path, source):
    state = source.state_dict()
    old = {
        k: v[:, :, None, None] if k.endswith(("mlp.fc1.weight", "mlp.fc2.weight")) else v
        for k, v in state.items()
    }
    torch.save({"state_dict": old}, tmp_path / "det.pth")
    target = small_coc(seed=2)
    result = load_checkpoint(target, tmp_path / "det.pth")
    assert len(result.converted_keys) == 8 and all("mlp.fc" in k for k in result.converted_keys)
    assert_same_weights(source, target)


def test_wrong_keys_list_missing_unexpected_and_mismatched_and_leave_model_unchanged(source):
    state = dict(source.state_dict())
    del state["head.bias"]
    state["head.extra"] = torch.zeros(1)
    state["norm.weight"] = torch.zeros(3)
    target = small_coc(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(target, state)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "missing keys (1): head.bias" in message
    assert "unexpected keys (1): head.extra" in message
    assert "norm.weight: [3] vs [8]" in message
    assert info.value.missing == ["head.bias"] and info.value.unexpected == ["head.extra"]
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_non_strict_reports_and_shapes_still_checked(source):
    state = dict(source.state_dict())
    del state["head.bias"]
    state["head.extra"] = torch.zeros(1)
    result = load_checkpoint(small_coc(seed=2), state, strict=False)
    assert result.missing_keys == ["head.bias"] and result.unexpected_keys == ["head.extra"]
    state["head.weight"] = torch.zeros(7, 8)
    with pytest.raises(CheckpointError, match="head.weight: \\[7, 8\\] vs \\[5, 8\\]"):
        load_checkpoint(small_coc(seed=2), state, strict=False)


def test_exclude_drops_the_head_for_another_class_count(source):
    target = create_model(
        "coc_tiny",
        num_classes=9,
        layers=[1, 1, 1, 1],
        embed_dims=[8, 8, 8, 8],
        heads=[1, 1, 1, 1],
        head_dim=[4, 4, 4, 4],
    )
    load_checkpoint(target, source.state_dict(), exclude=("head.",))
    assert torch.equal(target.norm.weight, source.norm.weight)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_non_weights_only_pickle_is_refused_cleanly(tmp_path, source):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": source.state_dict(), "hook": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*posix.system|refusing"):
        load_checkpoint(small_coc(), path)


def test_unreadable_inputs_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="found keys \\['epoch'\\]"):
        read_state_dict({"epoch": 3})
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="is a list, not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="path or a mapping"):
        read_state_dict(3)


def test_create_model_loads_checkpoint(tmp_path, source):
    torch.save({"net": source.state_dict()}, tmp_path / "c.pth")
    model = create_model(
        "coc_tiny",
        num_classes=5,
        checkpoint=tmp_path / "c.pth",
        layers=[1, 1, 1, 1],
        embed_dims=[8, 8, 8, 8],
        heads=[1, 1, 1, 1],
        head_dim=[4, 4, 4, 4],
    )
    assert_same_weights(source, model)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        create_model("coc_tiny", checkpoint=tmp_path / "c.pth")


def test_official_fixture_file_loads_strictly_and_reproduces_its_logits(shared_dir):
    """Oracle: the coc_mini fixture, a file written by the official code's run (weights
    under ``state_dict`` beside inputs and outputs)."""
    import json

    from pointset.models import ContextClusterNet

    path = shared_dir / "reference" / "fixtures" / "coc_mini.pt"
    if not path.is_file():
        pytest.skip("coc_mini.pt is absent")
    fixture = torch.load(path, weights_only=True)
    config = json.loads(fixture["config_json"])
    config.pop("norm_layer")
    model = ContextClusterNet(**config).eval()
    load_checkpoint(model, path, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(fixture["input"]), fixture["logits"], atol=1e-5, rtol=0)
