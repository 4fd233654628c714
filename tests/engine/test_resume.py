"""Exact resume: a run killed mid-epoch with SIGKILL and resumed with ``resume=True`` ends
with the same weights (bit for bit) and metrics as an uninterrupted run (the oracle)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pointset.engine import Trainer, load_weights

REPO = Path(__file__).resolve().parents[2]

# Runs the tiny config and SIGKILLs itself at step 2 of the second epoch (0-based epoch 1).
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pointset.engine import Trainer, load_config

    def hook(epoch, step):
        if (epoch, step) == (1, 2):
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer(load_config(sys.argv[1], sys.argv[2:]), on_step=hook).fit()
    """
)


def _records(run):
    with open(run / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


@pytest.mark.slow
def test_killed_run_resumes_bit_for_bit(tmp_path, tiny, restore_threads):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref = Trainer(tiny.config(ref_dir), log=lambda s: None)
    ref_final = ref.fit()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    args = [sys.executable, "-c", KILLER, str(tiny.path), *tiny.overrides(run_dir)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with open(run_dir / "last.json") as f:
        assert json.load(f)["epoch"] == 1  # only the first epoch was completed

    final = Trainer(tiny.config(run_dir), resume=True, log=lambda s: None).fit()

    ref_w, run_w = load_weights(ref_dir / "last"), load_weights(run_dir / "last")
    assert ref_w.keys() == run_w.keys()
    for key in ref_w:
        assert torch.equal(ref_w[key], run_w[key]), key
    assert _records(ref_dir) == _records(run_dir)
    for key in ("test_oa", "test_macc", "test_loss", "best"):
        assert final[key] == ref_final[key]


def test_resume_without_checkpoint_starts_fresh_and_rerun_is_refused(
    tmp_path, tiny, restore_threads
):
    out = tmp_path / "run"
    cfg = tiny.config(out, "train.epochs=1")
    lines = []
    Trainer(cfg, resume=True, log=lines.append).fit()
    assert any("starting from scratch" in line for line in lines)
    assert (out / "best.safetensors").is_file() and (out / "curves.png").is_file()
    assert (out / "confusion_matrix.png").is_file()
    try:
        Trainer(cfg).fit()
    except ValueError as exc:
        assert "--resume" in str(exc) and "--overwrite" in str(exc)
    else:
        raise AssertionError("a second fresh run into the same output_dir must be refused")
    lines.clear()
    final = Trainer(
        tiny.config(out, "train.epochs=1", "train.lr=0.02"), resume=True, log=lines.append
    ).fit()
    assert any("differs from the checkpoint's in train.lr" in line for line in lines)
    assert 0 <= final["test_oa"] <= 1  # a finished run is evaluated again


# Runs the tiny config and SIGKILLs itself right after the k-th rename (os.replace) of a
# checkpoint file. The first epoch's save renames best (weights, metadata), then last
# (weights, state, metadata): k = 1..5 covers each rename of both commits.
RENAME_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pointset.engine import Trainer, load_config

    k, count = int(sys.argv[1]), [0]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.path.basename(dst).startswith(("best.", "last.")):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    Trainer(load_config(sys.argv[2], sys.argv[3:]), log=lambda s: None).fit()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_kill_after_each_checkpoint_rename_resumes_to_the_same_weights(
    tmp_path, tiny, restore_threads, k
):
    """Oracle: an uninterrupted run of the same config (the reference is shared by the
    five cases through a cache on the tiny fixture's data root)."""
    ref_dir = tiny.data_root.parent / "rename_reference"
    if not (ref_dir / "last.json").is_file():
        Trainer(tiny.config(ref_dir, "train.epochs=2"), overwrite=True, log=lambda s: None).fit()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run_dir = tmp_path / "killed"
    sets = tiny.overrides(run_dir, "train.epochs=2")
    args = [sys.executable, "-c", RENAME_KILLER, str(k), str(tiny.path), *sets]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert any(p.endswith(".tmp") for p in os.listdir(run_dir)) == (k not in (2, 5))

    Trainer(tiny.config(run_dir, "train.epochs=2"), resume=True, log=lambda s: None).fit()
    ref_w, run_w = load_weights(ref_dir / "last"), load_weights(run_dir / "last")
    assert ref_w.keys() == run_w.keys()
    for key in ref_w:
        assert torch.equal(ref_w[key], run_w[key]), key
    assert _records(ref_dir) == _records(run_dir)
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
