"""Divergence and run-time settings: a NaN/inf loss stops the run with an error naming the
epoch and step and keeps the last good checkpoint; lr, grad_clip, threads and device are
validated; metrics.jsonl stays strict JSON. Oracles: the step where a NaN is injected, and
Python's strict JSON parser."""

from __future__ import annotations

import json

import pytest
import torch

from pointset.engine import ConfigError, DivergenceError, Trainer, load_weights
from pointset.engine import tasks as tasks_module


def _strict_json_lines(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    with open(path) as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(
    tmp_path, tiny, restore_threads, monkeypatch
):
    real, calls = tasks_module.smoothed_cross_entropy, []
    steps = 60 // 8  # tiny: 15 classes x 4 training samples, batches of 8, drop_last

    def loss_with_nan(logits, y, eps):
        loss = real(logits, y, eps)
        if torch.is_grad_enabled():  # a training step
            calls.append(1)
            if len(calls) == steps + 4:  # the 4th step of the 2nd epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(tasks_module, "smoothed_cross_entropy", loss_with_nan)
    out = tmp_path / "run"
    cfg = tiny.config(out)
    with pytest.raises(DivergenceError) as info:
        Trainer(cfg, log=lambda s: None).fit()
    text = str(info.value)
    assert "epoch 2, step 4" in text and "\n" not in text
    with open(out / "last.json") as f:
        assert json.load(f)["epoch"] == 1  # the last good checkpoint stays
    weights = load_weights(out / "last")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert len(_strict_json_lines(out / "metrics.jsonl")) == 1


def test_huge_lr_diverges_with_an_error(tmp_path, tiny, restore_threads):
    out = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"training diverged: .* at epoch \d+, step \d+"):
        Trainer(tiny.config(out, "train.lr=1e6"), log=lambda s: None).fit()
    if (out / "metrics.jsonl").exists():
        for rec in _strict_json_lines(out / "metrics.jsonl"):
            assert all(v is None or v == v for v in rec.values())


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lr=.inf", "finite"),
        ("train.lr=.nan", "finite"),
        ("train.lr=0", "must be > 0"),
        ("train.lr=-0.1", "must be > 0"),
        ("train.grad_clip=-1", "null disables clipping"),
        ("train.grad_clip=0", "null disables clipping"),
        ("train.threads=0", ">= 1"),
        ("train.threads=-1", ">= 1"),
        ("train.device=tpu", "auto, cpu, cuda, cuda:N or mps"),
        ("data.val_split=1.5", "between 0 and 1"),
    ],
)
def test_bad_settings_are_config_errors(tiny, tmp_path, override, needle):
    with pytest.raises(ConfigError) as info:
        tiny.config(tmp_path / "run", override)
    key = override.split("=")[0]
    assert key in str(info.value) and needle in str(info.value)


def test_good_settings_pass(tiny, tmp_path):
    cfg = tiny.config(tmp_path, "train.grad_clip=1.0", "train.device=cpu", "train.threads=2")
    assert cfg.train.grad_clip == 1.0 and cfg.train.threads == 2
    assert tiny.config(tmp_path, "train.device=cuda:1").train.device == "cuda:1"
