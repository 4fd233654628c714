"""pointset.engine.checkpoint: atomic writes, token pairing, weights_only loading."""

from __future__ import annotations

import os

import pytest
import torch

from pointset.engine import checkpoint as ck
from pointset.engine.seeding import get_rng_state, set_rng_state


def _state():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return model, opt


def test_roundtrip_loads_with_weights_only(tmp_path):
    model, opt = _state()
    state = {"epoch": 3, "optimizer": opt.state_dict(), "rng": get_rng_state(), "history": "[]"}
    paths = ck.save_checkpoint(tmp_path / "last", model.state_dict(), {"epoch": 4}, state)
    assert sorted(os.listdir(tmp_path)) == ["last.json", "last.safetensors", "last.state.pt"]
    weights = ck.load_weights(paths.weights)
    for k, v in model.state_dict().items():
        assert torch.equal(weights[k], v)
    loaded = ck.load_training_state(tmp_path / "last")  # weights_only=True inside
    torch.load(paths.state, weights_only=True)
    assert loaded["epoch"] == 3 and ck.load_metadata(paths.meta)["epoch"] == 4
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    model, _ = _state()
    ck.save_checkpoint(tmp_path / "best", model.state_dict(), {"epoch": 1})
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.json, "dump", boom)
    with torch.no_grad():
        model[0].weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path / "best", model.state_dict(), {"epoch": 2})
    after = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert after == before  # no temp files left, old files untouched


def test_mismatched_files_are_detected(tmp_path):
    model, _ = _state()
    ck.save_checkpoint(tmp_path / "a", model.state_dict(), {"epoch": 1})
    ck.save_checkpoint(tmp_path / "b", model.state_dict(), {"epoch": 2})
    os.replace(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="not written together"):
        ck.load_weights(tmp_path / "a.json")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load_weights(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="unreadable"):
        ck.load_weights(tmp_path / "bad")


def test_paths_from_any_file():
    p = ck.CheckpointPaths.of("runs/x/best.state.pt")
    assert p == ck.CheckpointPaths.of("runs/x/best")
    assert p.weights.endswith("best.safetensors") and p.meta.endswith("best.json")
