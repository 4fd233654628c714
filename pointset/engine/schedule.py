"""Learning-rate schedule: linear warm-up, then cosine annealing, step decay or a constant rate.

With no warm-up and ``unit="epoch"`` the rate of epoch ``e`` (0-based) of ``E`` is

.. math::
    \\eta_e = \\eta_{min} + \\tfrac12(\\eta_0 - \\eta_{min})\\,(1 + \\cos(\\pi e / E)),

the closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=E, eta_min)`` stepped
once per epoch, which is PointMLP's recipe (``eta_min = lr / 100``). The schedule is a pure
function of the position ``(epoch, step)``, so resuming needs no scheduler history.

Warm-up over ``w`` epochs scales the rate by ``(t + u) / (w + u)`` at position ``t`` (in
epochs), where ``u`` is one unit: one epoch for ``unit="epoch"`` (so one warm-up epoch runs
at half the rate), one step for ``unit="step"``. The cosine then runs over the remaining
``E - w`` epochs.

Step decay (``kind="step"``) multiplies the rate by ``gamma`` every ``step_size`` epochs
after the warm-up, never going below ``min_lr_ratio`` of the base rate:
:math:`\\eta_e = \\max(\\eta_0 \\gamma^{\\lfloor e / s \\rfloor}, \\eta_0 r_{min})`, the closed
form of ``torch.optim.lr_scheduler.StepLR`` stepped once per epoch plus the floor of
PointMLP's part-segmentation recipe (step 40, gamma 0.5, floor 0.9e-5).
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer


class WarmupCosineSchedule:
    """Sets the learning rate of every parameter group from the training position.

    Args:
        optimizer: the optimizer; each group's current ``lr`` becomes its base rate.
        epochs: total epochs ``E``.
        steps_per_epoch: optimisation steps per epoch (for ``unit="step"``).
        min_lr_ratio: final rate as a fraction of the base rate. (default: ``0.01``)
        warmup_epochs: length of the linear warm-up in epochs. (default: ``0``)
        unit: ``"epoch"`` (rate changes once per epoch) or ``"step"``. (default: ``"epoch"``)
        kind: ``"cosine"``, ``"step"`` or ``"constant"`` (warm-up still applies).
            (default: ``"cosine"``)
        step_size: epochs between two decays of ``kind="step"``. (default: ``30``)
        gamma: decay factor of ``kind="step"``. (default: ``0.1``)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        epochs: int,
        steps_per_epoch: int,
        min_lr_ratio: float = 0.01,
        warmup_epochs: float = 0.0,
        unit: str = "epoch",
        kind: str = "cosine",
        step_size: int = 30,
        gamma: float = 0.1,
    ) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        if kind not in ("cosine", "step", "constant"):
            raise ValueError(f"kind must be 'cosine', 'step' or 'constant', got {kind!r}")
        if kind == "step" and (int(step_size) < 1 or not 0 < gamma <= 1):
            raise ValueError(
                f"step decay needs step_size >= 1 and 0 < gamma <= 1, got {step_size}, {gamma}"
            )
        if warmup_epochs >= epochs and warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be below epochs ({epochs})")
        self.optimizer = optimizer
        self.epochs = epochs
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.min_lr_ratio = min_lr_ratio
        self.warmup_epochs = warmup_epochs
        self.unit = unit
        self.kind = kind
        self.step_size, self.gamma = int(step_size), float(gamma)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.position = (0, 0)

    def factor(self, epoch: int, step: int = 0) -> float:
        """Multiplier of the base rate at ``step`` (0-based) of ``epoch`` (0-based)."""
        if self.unit == "epoch":
            t, unit_len = float(epoch), 1.0
        else:
            t, unit_len = epoch + step / self.steps_per_epoch, 1.0 / self.steps_per_epoch
        if t < self.warmup_epochs:  # linear ramp; reaches 1 right after the warm-up
            return (t + unit_len) / (self.warmup_epochs + unit_len)
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            decays = math.floor((t - self.warmup_epochs) / self.step_size)
            return max(self.gamma**decays, self.min_lr_ratio)
        progress = (t - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
        progress = min(max(progress, 0.0), 1.0)
        lo = self.min_lr_ratio
        return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def set(self, epoch: int, step: int = 0) -> float:
        """Write the rates for position ``(epoch, step)`` into the optimizer; returns the
        first group's rate."""
        f = self.factor(epoch, step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        self.position = (epoch, step)
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.position[0], "step": self.position[1]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set(int(state["epoch"]), int(state["step"]))
