"""Model selection: ``data.val_split`` holds out a seeded part of train, ``best`` is chosen
on it and the test split is evaluated once, for ``best``; without it the run says that
``best`` was chosen on the test split. Oracles: set arithmetic on sample indices, the argmax
of the recorded validation OA, and an independent evaluation of the ``best`` checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from pointset.engine import Trainer
from pointset.engine.data import ArraySplit
from pointset.engine.selection import hold_out


def _split(n: int) -> ArraySplit:
    inputs = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 4, 3).clone()
    return ArraySplit(inputs, torch.arange(n) % 3, ["a", "b", "c"], "points")


def test_hold_out_is_a_seeded_partition():
    data = _split(50)
    train, val = hold_out(data, 0.2, seed=7)
    ids = lambda s: set(s.inputs[:, 0, 0].long().tolist())  # noqa: E731
    assert len(val) == 10 and len(train) == 40
    assert ids(train) | ids(val) == set(range(50)) and not ids(train) & ids(val)
    for part in (train, val):  # labels travel with their inputs
        assert torch.equal(part.labels, part.inputs[:, 0, 0].long() % 3)
    again, val2 = hold_out(data, 0.2, seed=7)
    assert ids(val2) == ids(val) and torch.equal(again.inputs, train.inputs)
    assert ids(hold_out(data, 0.2, seed=8)[1]) != ids(val)
    with pytest.raises(ValueError, match="at least 2"):
        hold_out(_split(1), 0.5, seed=0)


def _records(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_val_split_chooses_best_and_reports_test_once(tmp_path, tiny, restore_threads):
    out, lines = tmp_path / "run", []
    final = Trainer(tiny.config(out, "data.val_split=0.25"), log=lines.append).fit()
    records = _records(out)
    assert all("val_oa" in r and "test_oa" not in r and r["selected_on"] == "val" for r in records)
    best_epoch = max(range(len(records)), key=lambda i: (records[i]["val_oa"], -i)) + 1
    assert final["best"]["epoch"] == best_epoch
    assert final["best"]["val_oa"] == records[best_epoch - 1]["val_oa"]
    assert json.loads((out / "best.json").read_text())["epoch"] == best_epoch
    assert any("45 train / 15 val / 30 test samples" in line for line in lines)
    assert not any("chosen on the test split" in line for line in lines)
    # the reported test numbers are those of the best checkpoint
    check = Trainer(tiny.config(tmp_path / "eval"), log=lambda s: None).evaluate(str(out / "best"))
    assert final["test_oa"] == check["oa"] == final["best"]["test_oa"]
    assert final["test_macc"] == check["macc"]


def test_without_val_split_the_test_selection_is_stated(tmp_path, tiny, restore_threads):
    out, lines = tmp_path / "run", []
    Trainer(tiny.config(out, "train.epochs=1"), log=lines.append).fit()
    assert any("best is chosen on the test split" in line for line in lines)
    assert all(r["selected_on"] == "test" and "test_oa" in r for r in _records(out))
