"""What the trainer does per task: data, forward pass, loss, metrics and pictures.

The :class:`~pointset.engine.trainer.Trainer` owns the loop, the optimizer, the schedule,
checkpoints, resuming and the processes; a task object supplies everything that depends on
what is predicted. ``task: classification`` (one label per sample; OA and mAcc) is
:class:`ClassificationTask`; ``task: segmentation`` (one label per point; mIoU) is
:class:`pointset.engine.segmentation.SegmentationTask`.

A task has:

- ``best_metrics``: the metrics a ``best`` checkpoint records; the first one's increase
  makes a new ``best`` (on the validation split when there is one, else on test);
  ``best_label`` names it in the log;
- ``load_split(data_cfg, split)``: the split in memory (``len``, ``labels``,
  ``class_names``, ``batch(index, device) -> (inputs, labels)``);
- ``check(model_name, split)``: raise ``ValueError`` when model, data and augmentation do
  not fit together; ``model_options(split)``: constructor options the data implies;
- ``train_step(model, split, inputs, labels, generator) -> (loss, correct, count)``;
- ``begin_eval(split, device)``, ``eval_batch(model, split, inputs, labels, num_classes)
  -> (loss, confusion)`` per batch, ``end_eval() -> dict`` (extra metrics, reduced over
  processes);
- ``metrics(confusion) -> dict`` and ``split_record(result, split) -> dict`` (keys
  ``<split>_*``, e.g. ``test_oa`` or ``val_miou``);
- ``summary(result) -> str`` (the lines ``pointset eval`` prints),
  ``epoch_summary(record, split)``;
- ``save_pictures(model, split, folder, title)``: per-evaluation pictures (may do nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .data import ArraySplit, augment, check_augment, load_split, model_input
from .loss import smoothed_cross_entropy
from .metrics import confusion_matrix, mean_class_accuracy, overall_accuracy

if TYPE_CHECKING:  # loaders take a config; the config lists the loaders
    from .config import Config, DataConfig


def fmt_pct(v: float | None) -> str:
    """``0.1234`` -> ``"12.34%"``; ``None`` -> ``"-"``."""
    return "-" if v is None else f"{100 * v:.2f}%"


def model_task(name: str) -> str:
    """The ``task`` of a registered model's card (``classification`` when it names none)."""
    from pointset.models import model_card

    return model_card(name).default_cfg.get("task", "classification")


class ClassificationTask:
    """One class per sample: smoothed cross-entropy, OA and mAcc."""

    name = "classification"
    best_metrics = ("oa", "macc")
    best_label = "OA"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def load_split(self, data: DataConfig, split: str) -> ArraySplit:
        from .segmentation import SEG_DATASETS

        if data.name in SEG_DATASETS:
            raise ValueError(
                f"dataset {data.name!r} has per-point labels; set task: segmentation to train "
                "a segmentation model on it"
            )
        return load_split(data, split)

    def check(self, model_name: str, split: ArraySplit) -> None:
        from pointset.models import model_card

        if model_task(model_name) != self.name:
            raise ValueError(
                f"model {model_name!r} is a {model_task(model_name)} model but the config's "
                f"task is {self.name}; set task: {model_task(model_name)}"
            )
        if split.kind != (kind := model_card(model_name).input):
            raise ValueError(
                f"model {model_name!r} takes {kind} input but dataset {self.cfg.data.name!r} "
                f"gives {split.kind}"
            )
        check_augment(split.kind, self.cfg.data.augment)

    def model_options(self, split: ArraySplit) -> dict[str, Any]:
        return {}

    def train_step(
        self, model: nn.Module, split: ArraySplit, x: Tensor, y: Tensor, g: torch.Generator
    ) -> tuple[Tensor, Tensor, int]:
        x = augment(x, split.kind, self.cfg.data.augment, g)
        logits = model(model_input(x, split.kind))
        loss = smoothed_cross_entropy(logits, y, self.cfg.train.label_smoothing)
        with torch.no_grad():
            correct = (logits.argmax(1) == y).sum()
        return loss, correct, len(y)

    def eval_batch(
        self, model: nn.Module, split: ArraySplit, x: Tensor, y: Tensor, num_classes: int
    ) -> tuple[Tensor, Tensor]:
        logits = model(model_input(x, split.kind))
        loss = smoothed_cross_entropy(logits, y, self.cfg.train.label_smoothing)
        return loss, confusion_matrix(logits.argmax(1), y, num_classes)

    def begin_eval(self, split: ArraySplit, device: torch.device) -> None:
        return None

    def end_eval(self) -> dict[str, Any]:
        return {}

    def metrics(self, cm: Tensor) -> dict[str, Any]:
        return {"oa": overall_accuracy(cm), "macc": mean_class_accuracy(cm)}

    def split_record(self, result: dict[str, Any], split: str) -> dict[str, Any]:
        return {f"{split}_{key}": result[key] for key in ("oa", "macc", "loss")}

    def summary(self, result: dict[str, Any], class_names: list[str]) -> str:
        return f"OA {fmt_pct(result['oa'])}  mAcc {fmt_pct(result['macc'])}"

    def epoch_summary(self, record: dict[str, Any], split: str) -> str:
        return (
            f"train acc {fmt_pct(record['train_acc'])}  {split} OA "
            f"{fmt_pct(record.get(f'{split}_oa'))}  mAcc {fmt_pct(record.get(f'{split}_macc'))}"
        )

    def save_pictures(self, model: nn.Module, split: Any, folder: str, title: str) -> None:
        return None


def make_task(cfg: Config) -> Any:
    """The task object of ``cfg.task``."""
    if cfg.task == "segmentation":
        from .segmentation import SegmentationTask

        return SegmentationTask(cfg)
    return ClassificationTask(cfg)
