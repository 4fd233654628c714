"""Segmentation runs resume exactly and run under torchrun, as classification runs do.

Oracles: an uninterrupted run (weights bit for bit, identical records) and a
single-process evaluation of the checkpoint rank 0 wrote (same confusion matrix totals)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seg_testmodel  # noqa: E402,F401  (registers test_point_seg)
from test_segmentation import TINY_SEG, seg_config, seg_overrides  # noqa: E402

from pointset.engine import Trainer, load_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import seg_testmodel
    from pointset.engine import Trainer, load_config

    def hook(epoch, step):
        if (epoch, step) == (1, 1):
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer(load_config(sys.argv[2], sys.argv[3:]), on_step=hook).fit()
    """
)


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory) -> Path:
    from pointset.datasets import SyntheticScenes

    root = tmp_path_factory.mktemp("tiny_scenes_resume")
    SyntheticScenes(root, "train", num_points=256, train_scenes=8, test_scenes=4)
    return root


def _pythonpath() -> str:
    """This checkout first, then whatever the tests run with."""
    return os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def _records(run):
    with open(run / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


@pytest.mark.slow
def test_killed_segmentation_run_resumes_bit_for_bit(tmp_path, scenes_root, restore_threads):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref_final = Trainer(seg_config(scenes_root, ref_dir), log=lambda s: None).fit()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath()}
    args = [sys.executable, "-c", KILLER, str(HERE), str(TINY_SEG),
            *seg_overrides(scenes_root, run_dir)]  # fmt: skip
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == 1
    final = Trainer(seg_config(scenes_root, run_dir), resume=True, log=lambda s: None).fit()
    ref_w, run_w = load_weights(ref_dir / "last"), load_weights(run_dir / "last")
    assert ref_w.keys() == run_w.keys()
    for key in ref_w:
        assert torch.equal(ref_w[key], run_w[key]), key
    assert _records(ref_dir) == _records(run_dir)
    for key in ("test_miou", "test_oa", "test_iou", "test_loss", "best"):
        assert final[key] == ref_final[key]


@pytest.mark.slow
def test_torchrun_segmentation_then_single_process_eval(tmp_path, scenes_root, restore_threads):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath()}
    sets = [f"--set={o}" for o in seg_overrides(scenes_root, out, "train.epochs=2")]
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(HERE / "seg_cli.py"),
           "train", str(TINY_SEG), *sets]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("final: test mIoU") == 1  # only rank 0 prints
    meta = json.loads((out / "last.json").read_text())
    assert meta["epoch"] == 2
    result = Trainer(seg_config(scenes_root, out), log=lambda s: None).evaluate(
        str(out / "last.safetensors")
    )
    assert int(result["confusion"].sum()) == 4 * 256  # every test point once over both shards
    assert result["miou"] == pytest.approx(meta["metrics"]["test_miou"], abs=1e-9)
