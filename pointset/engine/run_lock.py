"""One run per ``output_dir``: the lock, the fresh-start check and the clean-up of
interrupted writes.

:func:`hold_output_dir` wraps a whole training run. The main process takes an exclusive
lock on ``<output_dir>/.pointset.lock`` (a second run into the same folder stops with an
error naming the first one's process id), then

- on a fresh start, refuses a folder that already holds a run file (``config.yaml``,
  ``metrics.jsonl`` or a ``best``/``last`` checkpoint) unless ``overwrite`` is set, in
  which case the old checkpoints and metrics are deleted first;
- finishes a checkpoint save that a crash interrupted and deletes the temporary files of
  killed writes (see :mod:`pointset.engine.checkpoint`).

Under ``torchrun`` only the main process locks and checks; the others learn whether it
succeeded, so every process stops together.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from pointset.data.lock import exclusive_lock

from . import distributed as D
from .checkpoint import TEMP_FILE, CheckpointPaths, recover_checkpoint

LOCK_FILE = ".pointset.lock"

#: The checkpoints a run writes into its ``output_dir``.
CHECKPOINTS = ("last", "best")


class RunExistsError(ValueError):
    """``output_dir`` already holds a run and neither resuming nor overwriting was asked."""


def run_files(output_dir: str) -> list[str]:
    """The files of a run found in ``output_dir`` (config, metrics and checkpoint files)."""
    names = ["config.yaml", "metrics.jsonl"]
    for prefix in CHECKPOINTS:
        names += [os.path.basename(p) for p in CheckpointPaths.of(prefix).files()]
    return [
        os.path.join(output_dir, n) for n in names if os.path.exists(os.path.join(output_dir, n))
    ]


def _prepare(output_dir: str, resume: bool, overwrite: bool) -> None:
    found = run_files(output_dir)
    if found and not resume:
        if not overwrite:
            shown = ", ".join(os.path.basename(p) for p in found)
            raise RunExistsError(
                f"{output_dir} already holds a run ({shown}); pass --resume to continue it "
                "or --overwrite to start over"
            )
        for path in found:
            if not path.endswith("config.yaml"):
                os.remove(path)  # no checkpoint of the old run may outlive the new start
    for prefix in CHECKPOINTS:
        recover_checkpoint(os.path.join(output_dir, prefix))
    for entry in os.listdir(output_dir):
        if TEMP_FILE.match(entry) and os.path.isfile(os.path.join(output_dir, entry)):
            os.remove(os.path.join(output_dir, entry))  # left by a killed write


@contextmanager
def hold_output_dir(
    output_dir: str, dist: D.DistInfo, resume: bool = False, overwrite: bool = False
) -> Iterator[None]:
    """Lock ``output_dir`` for the ``with`` block and prepare it for a fresh or resumed run.

    Raises:
        LockHeldError: another run holds ``output_dir``.
        RunExistsError: a fresh start into a folder holding a run, without ``overwrite``.
    """
    with ExitStack() as stack:
        error: BaseException | None = None
        if dist.is_main:
            try:
                os.makedirs(output_dir, exist_ok=True)
                stack.enter_context(
                    exclusive_lock(os.path.join(output_dir, LOCK_FILE), f"output_dir {output_dir}")
                )
                _prepare(output_dir, resume, overwrite)
            except Exception as exc:  # re-raised below, once every process knows
                error = exc
        failed = torch.tensor([float(error is not None)], device=dist.device)
        D.all_reduce_sum(failed)
        if error is not None:
            raise error
        if failed.item():
            raise ValueError(f"the main process could not start the run in {output_dir}")
        yield
