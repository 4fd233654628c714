"""Config-driven training and evaluation of classifiers and segmenters.

One :class:`Trainer` runs a :class:`~pointset.engine.config.Config`: it builds the data
splits and the model, trains for ``train.epochs`` epochs with the configured optimizer,
schedule and loss, evaluates, and writes into ``output_dir``:

- ``last.*`` after every epoch and ``best.*`` when the selection metric improves (on
  ``data.val_split`` when set, else on the test split; see :mod:`pointset.engine.selection`
  and :mod:`pointset.engine.checkpoint`);
- ``metrics.jsonl``: one strict-JSON record per epoch;
- ``curves.png`` (loss and accuracy per epoch) and ``confusion_matrix.png``;
- ``config.yaml``: the resolved config.

What depends on the task (``task: classification``: OA and mAcc, best by OA;
``task: segmentation``: per-point labels, mIoU, per-class IoU and ``predictions.png``,
best by mIoU) lives in a task object (:mod:`pointset.engine.tasks`).

Reproducibility: the data order and augmentation of epoch ``e`` come from generators seeded
with ``(seed, e)`` and the global generators are re-seeded at every epoch start, so a run
resumed from its ``last`` checkpoint (``resume=True``) ends with the same weights and
metrics, bit for bit on the same machine, as an uninterrupted one. A run holds a lock on
``output_dir`` (:mod:`pointset.engine.run_lock`), and a NaN or infinite loss stops it with
an error before anything is saved (:mod:`pointset.engine.guards`).

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel``; each global batch is
split over the processes, evaluation confusion matrices are summed over them, and only
rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import yaml
from torch import nn

from . import distributed as D
from .build import create, load_state
from .checkpoint import (
    CheckpointPaths,
    json_safe,
    load_metadata,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from .config import Config
from .data import ArraySplit, epoch_batches
from .guards import check_loss, check_weights
from .plots import save_confusion_matrix, save_curves
from .run_lock import RunExistsError, hold_output_dir
from .schedule import WarmupCosineSchedule
from .seeding import generator, get_rng_state, seed_everything, set_rng_state
from .selection import TEST_SELECTION_NOTE, BestTracker, hold_out
from .tasks import fmt_pct as _fmt_pct
from .tasks import make_task

#: Called after every optimisation step with ``(epoch, step)`` (both 0-based).
StepHook = Callable[[int, int], None]


__all__ = ["RunExistsError", "StepHook", "Trainer"]


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class Trainer:
    """Train and evaluate the model of ``cfg``.

    Args:
        cfg: the experiment config.
        resume: continue the run in ``cfg.output_dir`` from its ``last`` checkpoint.
        overwrite: start over even if ``cfg.output_dir`` holds a run.
        on_step: optional :data:`StepHook`.
        log: where progress lines go (rank 0 only). (default: ``print``)
    """

    def __init__(
        self,
        cfg: Config,
        resume: bool = False,
        overwrite: bool = False,
        on_step: StepHook | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.resume = resume
        self.overwrite = overwrite
        self.on_step = on_step
        self.dist = D.process_info(cfg.train.device)
        self._log = log
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.out = cfg.output_dir
        self.task = make_task(cfg)
        self.bars = cfg.train.progress and self.dist.is_main and sys.stderr.isatty()

    # -- helpers ---------------------------------------------------------------------

    def log(self, text: str) -> None:
        if self.dist.is_main:
            self._log(text)

    def _path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def _load_data(self, splits: tuple[str, ...]) -> dict[str, ArraySplit]:
        """Rank 0 loads first (it may generate or unpack files), then the others; an error
        on rank 0 is raised after the barrier, so no process waits forever."""
        out: dict[str, ArraySplit] = {}
        error: BaseException | None = None
        if self.dist.is_main:
            try:
                out = {split: self.task.load_split(self.cfg.data, split) for split in splits}
            except Exception as exc:  # re-raised below, once every process got here
                error = exc
        D.barrier()
        if error is not None:
            raise error
        if not self.dist.is_main:
            out = {split: self.task.load_split(self.cfg.data, split) for split in splits}
        return out

    def _build_model(self, num_classes: int, split: ArraySplit) -> nn.Module:
        m = self.cfg.model
        seed_everything(self.cfg.seed, "model")
        self.model_options = {**self.task.model_options(split), **m.options}
        model = create(m.name, num_classes, m.checkpoint, **self.model_options)
        return model.to(self.dist.device)

    def _num_classes(self, split: ArraySplit) -> int:
        n = self.cfg.model.num_classes or len(split.class_names)
        top = int(split.labels.max()) if len(split) else -1
        if top >= n:
            raise ValueError(f"labels reach {top} but the model has {n} classes")
        return n

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        t = self.cfg.train
        params = [p for p in model.parameters() if p.requires_grad]
        if t.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
            )
        return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)

    def _meta(self, epoch: int, record: dict[str, Any], class_names: list[str]) -> dict:
        return {
            "format": "pointset-checkpoint/1",
            "model": self.cfg.model.name,
            "model_options": self.model_options,
            "task": self.task.name,
            "num_classes": len(class_names),
            "class_names": class_names,
            "input": self.kind,
            "epoch": epoch,
            "metrics": record,
            "config": self.cfg.to_dict(),
        }

    # -- evaluation ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_split(self, model: nn.Module, split: ArraySplit, num_classes: int) -> dict:
        """The task's metrics (OA and mAcc, or mIoU, OA and per-class IoU), the mean loss and
        the confusion matrix of ``model`` on ``split``.

        Under ``torchrun`` each process evaluates every ``world_size``-th sample and the
        confusion matrices and loss sums are added over processes (in the process group of
        :meth:`fit` / :meth:`evaluate`, or one made for this call).
        """
        with D.process_group(self.dist):
            return self._evaluate_split(model, split, num_classes)

    def _evaluate_split(self, model: nn.Module, split: ArraySplit, num_classes: int) -> dict:
        was_training = model.training
        model.eval()
        rank, world = self.dist.rank, self.dist.world_size
        idx = torch.arange(rank, len(split), world)
        bs = max(self.cfg.data.eval_batch_size // world, 1)
        cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=self.dist.device)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=self.dist.device)
        chunks = list(idx.split(bs))
        self.task.begin_eval(split, self.dist.device)
        for chunk in _progress(chunks, len(chunks), "eval", self.bars):
            x, y = split.batch(chunk, self.dist.device)
            loss, batch_cm = self.task.eval_batch(model, split, x, y, num_classes)
            loss_sum += torch.stack(
                [loss.double() * len(chunk), loss.new_tensor(len(chunk)).double()]
            )
            cm += batch_cm
        D.all_reduce_sum(cm)
        D.all_reduce_sum(loss_sum)
        extra = self.task.end_eval()
        model.train(was_training)
        cm = cm.cpu()
        return {
            **self.task.metrics(cm),
            **extra,
            "loss": float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else float("nan"),
            "confusion": cm,
        }

    def evaluate(self, checkpoint: str, split: str = "test", out_png: str | None = None) -> dict:
        """Evaluate the weights of ``checkpoint`` on ``split`` of the configured dataset.

        Under ``torchrun`` the processes form a process group for the call (see :meth:`fit`).
        """
        with D.process_group(self.dist):
            return self._evaluate(checkpoint, split, out_png)

    def _evaluate(self, checkpoint: str, split: str, out_png: str | None) -> dict:
        weights = load_weights(checkpoint)
        data = self._load_data((split,))[split]
        self.kind = data.kind
        self.task.check(self.cfg.model.name, data)
        num_classes = self._num_classes(data)
        model = self._build_model(num_classes, data)
        load_state(model, weights, checkpoint, self.cfg.model.name)
        result = self.evaluate_split(model, data, num_classes)
        lines = self.task.summary(result, list(data.class_names)).split("\n")
        self.log(f"{split}: {lines[0]}  loss {result['loss']:.4f}  ({len(data)} samples)")
        for line in lines[1:]:
            self.log(line)
        if out_png and self.dist.is_main:
            save_confusion_matrix(
                result["confusion"], out_png, data.class_names,
                title=f"{self.cfg.model.name} on {self.cfg.data.name} {split}",
            )  # fmt: skip
            self.log(f"wrote {out_png}")
        return result

    # -- training --------------------------------------------------------------------

    def _train_epoch(
        self,
        model: nn.Module,
        data: ArraySplit,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosineSchedule,
        epoch: int,
    ) -> dict[str, float]:
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        seed_everything(cfg.seed, "epoch", epoch, rank)
        order = generator(cfg.seed, "order", epoch)
        aug = generator(cfg.seed, "augment", epoch, rank)
        batches = epoch_batches(
            len(data), cfg.data.batch_size, cfg.data.drop_last, order, multiple_of=world
        )
        model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self.dist.device)
        bar = _progress(batches, len(batches), f"epoch {epoch + 1}/{cfg.train.epochs}", self.bars)
        for step, global_idx in enumerate(bar):
            lr = schedule.set(epoch, step)
            x, y = data.batch(D.shard_batch(global_idx, rank, world), self.dist.device)
            loss, correct, count = self.task.train_step(model, data, x, y, aug)
            check_loss(loss, epoch, step, lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            with torch.no_grad():
                n = totals.new_tensor(float(count))
                totals += torch.stack([loss.detach().double() * n, correct.double(), n])
            if self.bars:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if self.on_step is not None:
                self.on_step(epoch, step)
        D.all_reduce_sum(totals)
        n = max(float(totals[2]), 1.0)
        return {"train_loss": float(totals[0]) / n, "train_acc": float(totals[1]) / n}

    def _write_log(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from ``history`` (atomic; matches the checkpoint)."""
        from pointset._files import atomic_path

        with atomic_path(self._path("metrics.jsonl")) as tmp, open(tmp, "w") as f:
            for rec in history:
                f.write(json.dumps(json_safe(rec), sort_keys=True, allow_nan=False) + "\n")

    def fit(self) -> dict[str, Any]:
        """Train (or resume) the configured run; returns the final record with ``best``.

        Holds the lock of ``output_dir`` throughout (see :mod:`pointset.engine.run_lock`).
        Under ``torchrun`` the processes form a process group for the call, destroyed at
        its end, also on error.
        """
        lock = hold_output_dir(self.out, self.dist, self.resume, self.overwrite)
        with D.process_group(self.dist), lock:
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        start = time.perf_counter()
        data = self._load_data(("train", "test"))
        train, test = data["train"], data["test"]
        val = None
        if cfg.data.val_split is not None:
            train, val = hold_out(train, cfg.data.val_split, cfg.seed)
        self.task.check(cfg.model.name, train)
        self.kind = train.kind
        if cfg.data.batch_size % self.dist.world_size:
            raise ValueError(
                f"data.batch_size ({cfg.data.batch_size}) must be a multiple of the number of "
                f"processes ({self.dist.world_size})"
            )
        num_classes = self._num_classes(train)
        class_names = list(train.class_names)[:num_classes]
        class_names += [str(i) for i in range(len(class_names), num_classes)]
        model = self._build_model(num_classes, train)
        optimizer = self._optimizer(model)
        steps = len(
            epoch_batches(
                len(train), cfg.data.batch_size, cfg.data.drop_last, None, self.dist.world_size
            )
        )
        if steps == 0:
            raise ValueError(
                f"the training split has {len(train)} samples, fewer than one batch of "
                f"{cfg.data.batch_size}"
            )
        schedule = WarmupCosineSchedule(
            optimizer,
            cfg.train.epochs,
            steps,
            min_lr_ratio=cfg.train.min_lr_ratio,
            warmup_epochs=cfg.train.warmup_epochs,
            unit=cfg.train.schedule_unit,
            kind=cfg.train.schedule,
            step_size=cfg.train.step_size,
            gamma=cfg.train.gamma,
        )
        history: list[dict[str, Any]] = []
        task = self.task
        selection = BestTracker("test" if val is None else "val", task.best_metrics)
        first_epoch = 0
        last = CheckpointPaths.of(self._path("last"))
        if self.resume and os.path.exists(last.meta):
            state = load_training_state(last.state)
            model.load_state_dict(load_weights(last.weights))
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            set_rng_state(state["rng"])
            history = json.loads(state["history"])
            selection = BestTracker(selection.on, task.best_metrics, json.loads(state["best"]))
            first_epoch = int(state["epoch"]) + 1
            self.log(f"resuming {self.out} after epoch {first_epoch}/{cfg.train.epochs}")
            changed = _changed_keys(load_metadata(last.meta).get("config", {}), cfg.to_dict())
            if changed:
                self.log(f"note: the config differs from the checkpoint's in {', '.join(changed)}")
        elif self.resume:
            self.log(f"no checkpoint to resume in {self.out}; starting from scratch")
        if self.dist.is_main:
            with open(self._path("config.yaml"), "w") as f:
                yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
            self._write_log(history)

        n_params = sum(p.numel() for p in model.parameters())
        self.log(
            f"{cfg.model.name} ({n_params / 1e6:.2f}M parameters) on {cfg.data.name}: "
            f"{len(train)} train / "
            + (f"{len(val)} val / " if val is not None else "")
            + f"{len(test)} test samples, {num_classes} classes, "
            f"{cfg.train.epochs} epochs x {steps} steps, device {self.dist.device}"
            + (f" x {self.dist.world_size} processes" if self.dist.distributed else "")
        )
        if val is None:
            self.log(TEST_SELECTION_NOTE.replace("OA", task.best_label))
        on = selection.on
        selection_split = test if val is None else val
        net: nn.Module = model
        if self.dist.distributed:
            ids = [self.dist.device] if self.dist.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

        result: dict[str, Any] | None = None
        for epoch in range(first_epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            lr = schedule.factor(epoch) * cfg.train.lr
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
            record.update(self._train_epoch(net, train, optimizer, schedule, epoch))
            check_weights(model, epoch)
            is_last = epoch + 1 == cfg.train.epochs
            D.broadcast_buffers(model)  # every process evaluates rank 0's model
            if is_last or (epoch + 1) % cfg.train.eval_every == 0:
                result = self.evaluate_split(model, selection_split, num_classes)
                record.update(task.split_record(result, on))
                if self.dist.is_main:
                    task.save_pictures(model, selection_split, self.out, f"epoch {epoch + 1}")
            record["time"] = round(time.perf_counter() - t0, 3)
            improved = selection.update(record)
            history.append(record)
            best = selection.best
            if self.dist.is_main:
                self._save(
                    model, optimizer, schedule, epoch, record, history, best, class_names, improved
                )
            D.barrier()
            self.log(
                f"epoch {epoch + 1}/{cfg.train.epochs}  lr {lr:.2e}  "
                f"loss {record['train_loss']:.4f}  {task.epoch_summary(record, on)}  "
                f"({record['time']:.1f}s)"
            )

        best = selection.best
        which = f"epoch {cfg.train.epochs}"
        if val is not None:  # the test split is evaluated once, for the chosen weights
            D.barrier()
            load_state(model, load_weights(self._path("best")), self._path("best"), cfg.model.name)
            result = self.evaluate_split(model, test, num_classes)
            best = {**best, **task.split_record(result, "test")}
            which = f"best, epoch {best['epoch']}"
            if self.dist.is_main:
                task.save_pictures(model, test, self.out, f"test ({which})")
        elif result is None:  # resumed a finished run: evaluate the final weights once more
            result = self.evaluate_split(model, test, num_classes)
        if self.dist.is_main:
            save_confusion_matrix(
                result["confusion"], self._path("confusion_matrix.png"), class_names,
                title=f"{cfg.model.name} on {cfg.data.name} test ({which})",
            )  # fmt: skip
        final = {
            **task.split_record(result, "test"),
            "best": best,
            "wall_time": round(time.perf_counter() - start, 1),
        }
        lines = task.summary(result, class_names).split("\n")
        best_value = best.get(selection.key) if best["epoch"] > 0 else None
        self.log(
            f"final: test {lines[0]}  ({which}; best {on} {task.best_label} "
            f"{_fmt_pct(best_value)} at epoch {best['epoch']})  "
            f"wall time {final['wall_time']:.0f}s"
        )
        for line in lines[1:]:
            self.log(line)
        self.log(
            f"wrote {self._path('best.safetensors')}, {self._path('last.safetensors')}, "
            f"{self._path('curves.png')}, {self._path('confusion_matrix.png')}, "
            f"{self._path('metrics.jsonl')}"
        )
        D.barrier()
        return final

    def _save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosineSchedule,
        epoch: int,
        record: dict[str, Any],
        history: list[dict[str, Any]],
        best: dict[str, Any],
        class_names: list[str],
        improved: bool,
    ) -> None:
        weights = model.state_dict()
        meta = self._meta(epoch + 1, record, class_names)
        if improved:
            save_checkpoint(self._path("best"), weights, meta)
        state = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "schedule": {"epoch": epoch + 1, "step": 0},
            "rng": get_rng_state(),
            "history": json.dumps(history),
            "best": json.dumps(best),
        }
        save_checkpoint(self._path("last"), weights, meta, state)
        self._write_log(history)
        save_curves(history, self._path("curves.png"))


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config mappings."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, dotted + ".")
        elif a != b:
            out.append(dotted)
    return out
