"""Model selection: which split chooses the ``best`` checkpoint.

With ``data.val_split`` a seeded fraction of the training split is held out
(:func:`hold_out`); ``best`` is the epoch with the highest validation OA (mIoU for
segmentation) and the test split
is evaluated once, for ``best``. Without it ``best`` is the epoch with the highest *test* OA,
as in the official PointMLP training scripts; its test OA is then an optimistic number, and
the run says so in its log and in every ``metrics.jsonl`` record (``"selected_on": "test"``).
"""

from __future__ import annotations

from typing import Any

import torch

from .seeding import generator

TEST_SELECTION_NOTE = (
    "note: best is chosen on the test split (as the official PointMLP scripts do), so its "
    "test OA is optimistic; set data.val_split to choose it on held-out training data"
)


def hold_out(split: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Split ``split`` into ``(train, val)``: a random ``fraction`` of its samples (at least
    one; seeded by ``seed``) goes to ``val``, the rest to ``train``, both in their original
    order."""
    n = len(split)
    n_val = min(max(round(fraction * n), 1), n - 1)
    if n < 2:
        raise ValueError(f"data.val_split needs at least 2 training samples, got {n}")
    perm = torch.randperm(n, generator=generator(seed, "val_split"))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values

    return split.subset(train_idx), split.subset(val_idx)


class BestTracker:
    """The best epoch so far by the first of ``metrics`` (e.g. ``("oa", "macc")``) on split
    ``on`` (``"val"`` or ``"test"``); ``best`` records all of ``metrics`` and is stored in
    the resume state."""

    def __init__(
        self, on: str, metrics: tuple[str, ...] = ("oa", "macc"), best: dict[str, Any] | None = None
    ) -> None:
        self.on = on
        self.keys = tuple(f"{on}_{m}" for m in metrics)
        self.key = self.keys[0]
        self.best = best or {"epoch": -1, self.key: -1.0}

    def update(self, record: dict[str, Any]) -> bool:
        """Mark ``record`` (with ``epoch`` and the ``<on>_<metric>`` keys) selected; return
        whether it is the new best."""
        record["selected_on"] = self.on
        if self.key not in record or record[self.key] <= self.best.get(self.key, -1.0):
            return False
        self.best = {"epoch": record["epoch"], **{k: record[k] for k in self.keys}}
        return True
