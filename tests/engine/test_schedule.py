"""WarmupCosineSchedule against torch's CosineAnnealingLR (PointMLP's scheduler)."""

from __future__ import annotations

import pytest
import torch

from pointset.engine.schedule import WarmupCosineSchedule


def _opt(lr=0.01):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def test_epoch_cosine_equals_cosine_annealing_lr():
    epochs = 12
    ref_opt = _opt()
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, epochs, eta_min=0.0001)
    sched = WarmupCosineSchedule(_opt(), epochs, steps_per_epoch=5, min_lr_ratio=0.01)
    for epoch in range(epochs):
        for step in range(5):
            assert sched.set(epoch, step) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
        ref_opt.step()
        ref.step()


def test_warmup_then_cosine_per_step():
    sched = WarmupCosineSchedule(_opt(1.0), 10, 4, min_lr_ratio=0.0, warmup_epochs=1, unit="step")
    assert [sched.factor(0, s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert sched.factor(1, 0) == pytest.approx(1.0)
    assert sched.factor(5, 2) == pytest.approx(0.5)  # half-way through the cosine part
    assert sched.factor(9, 3) > 0


def test_epoch_warmup_halves_the_first_epoch():
    sched = WarmupCosineSchedule(_opt(1.0), 10, 4, min_lr_ratio=0.0, warmup_epochs=1)
    assert [sched.factor(0, s) for s in range(4)] == pytest.approx([0.5] * 4)
    assert sched.factor(1) == pytest.approx(1.0)


def test_constant_and_state_roundtrip():
    opt = _opt(0.1)
    sched = WarmupCosineSchedule(opt, 5, 2, kind="constant")
    sched.set(3, 1)
    state = sched.state_dict()
    other = WarmupCosineSchedule(_opt(0.1), 5, 2, kind="constant")
    other.load_state_dict(state)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert state == {"epoch": 3, "step": 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosineSchedule(_opt(), 3, 1, warmup_epochs=3)
    with pytest.raises(ValueError, match="unit"):
        WarmupCosineSchedule(_opt(), 3, 1, unit="batch")


@pytest.mark.parametrize(("epochs", "step_size", "floor"), [(350, 40, 0.003), (30, 3, 0.01)])
def test_step_decay_equals_steplr_with_pointmlp_floor(epochs, step_size, floor):
    """Oracle: torch's StepLR (gamma 0.5) stepped per epoch with the official part-segmentation
    floor logic (step only while above the floor, then clamp to it)."""
    base = 0.003
    ref_opt = _opt(base)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=step_size, gamma=0.5)
    sched = WarmupCosineSchedule(
        _opt(base), epochs, 7, min_lr_ratio=floor, kind="step", step_size=step_size, gamma=0.5
    )
    for epoch in range(epochs):
        assert sched.set(epoch, 3) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
        ref_opt.step()
        if ref_opt.param_groups[0]["lr"] > base * floor:
            ref.step()
        if ref_opt.param_groups[0]["lr"] < base * floor:
            ref_opt.param_groups[0]["lr"] = base * floor
    with pytest.raises(ValueError, match="step_size >= 1"):
        WarmupCosineSchedule(_opt(), 10, 2, kind="step", step_size=0)
