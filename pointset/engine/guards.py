"""Stop a diverging run: a non-finite loss or non-finite weights end training with an
error naming where it happened, before anything is saved (the last good checkpoint stays).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import distributed as D


class DivergenceError(ValueError):
    """The loss or the weights became NaN or infinite."""


def check_loss(loss: Tensor, epoch: int, step: int, lr: float) -> None:
    """Raise :class:`DivergenceError` if ``loss`` (a scalar) is not finite on any process.

    ``epoch`` and ``step`` are 0-based; the message counts from 1.
    """
    bad = (~torch.isfinite(loss.detach())).reshape(1).float()
    D.all_reduce_sum(bad)
    if bad.item():
        raise DivergenceError(
            f"training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, "
            f"step {step + 1} (lr {lr:.3g}); the last good checkpoint is kept, lower train.lr "
            "or set train.grad_clip"
        )


def check_weights(model: nn.Module, epoch: int) -> None:
    """Raise :class:`DivergenceError` if a parameter or buffer of ``model`` is not finite
    (``epoch`` is 0-based)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DivergenceError(
                f"training diverged: {name} became non-finite during epoch {epoch + 1}; the "
                "last good checkpoint is kept, lower train.lr or set train.grad_clip"
            )
