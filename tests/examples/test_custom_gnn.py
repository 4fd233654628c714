"""Smoke test of examples/custom_gnn.py in a reduced mode (a few steps, few clouds).

Oracle: the script's contract: it trains, prints the loss at regular steps and the final
train and held-out accuracies, and returns them. The full run (accuracy well above chance
within minutes) is documented in the script and checked by hand, not here.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "custom_gnn.py"


def _load():
    spec = importlib.util.spec_from_file_location("custom_gnn_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reduced_run_trains_and_prints(capsys):
    example = _load()
    threads = torch.get_num_threads()
    try:
        result = example.main(["--steps", "3", "--train", "10", "--test", "5", "--batch-size", "5"])
    finally:
        torch.set_num_threads(threads)  # the script sets its own thread count
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"step\s+\d+\s+loss (\S+)", out)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert "train accuracy" in out and "held-out accuracy" in out
    assert 0.0 <= result["train_acc"] <= 1.0 and 0.0 <= result["test_acc"] <= 1.0


def test_shapes_are_packed_clouds_of_unequal_size():
    example = _load()
    clouds = example.make_shapes(10, seed=0)
    sizes = {c.pos.size(0) for c in clouds}
    assert len(sizes) > 1 and min(sizes) >= 64 and max(sizes) <= 128
    assert [int(c.y) for c in clouds] == [i % 5 for i in range(10)]
    for c in clouds:
        assert c.pos.shape[1] == 3 and c.x.shape == (c.pos.size(0), 1)
        assert abs(float(c.pos.norm(dim=1).max()) - 1.0) < 1e-5
