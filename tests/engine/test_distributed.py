"""``torchrun --nproc_per_node=2`` trains the tiny config on CPU (gloo); the checkpoint that
rank 0 wrote loads into a single-process evaluation, which reproduces the run's metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pointset.engine import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_then_single_process_eval(tmp_path, tiny, restore_threads):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "pointset.cli",
        "train", str(tiny.path), *[f"--set={o}" for o in tiny.overrides(out, "train.epochs=2")],
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("final: test OA") == 1  # only rank 0 prints

    with open(out / "last.json") as f:
        meta = json.load(f)
    assert meta["epoch"] == 2
    cfg = tiny.config(out)
    result = Trainer(cfg, log=lambda s: None).evaluate(str(out / "last.safetensors"))
    n_test = int(result["confusion"].sum())
    assert n_test == 30  # every test sample once: the two shards were summed
    assert abs(result["oa"] - meta["metrics"]["test_oa"]) <= 1 / n_test
    assert torch.equal(result["confusion"].sum(1), torch.full((15,), 2))
