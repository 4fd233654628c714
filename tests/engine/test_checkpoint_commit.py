"""The checkpoint commit as a whole: a save interrupted after any single rename, or while
its temporary files are written, still reads as one complete generation; stray temporary
files are removed; files get the umask's mode; a full disk and damaged resume states give
one-line errors. Oracles: the tensors and metadata of the two generations written."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from pointset.engine import checkpoint as ck


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the raise runs, no ``except Exception`` catches it."""


def _generation(value: float, epoch: int):
    weights = {"w": torch.full((3,), value), "b": torch.tensor([value, -value])}
    state = {"epoch": epoch, "moment": torch.full((2,), value)}
    return weights, {"epoch": epoch}, state


def _assert_reads(prefix, value: float, epoch: int) -> None:
    weights = ck.load_weights(prefix)
    assert torch.equal(weights["w"], torch.full((3,), value))
    assert ck.load_metadata(prefix)["epoch"] == epoch
    state = ck.load_training_state(prefix)
    assert state["epoch"] == epoch and torch.equal(state["moment"], torch.full((2,), value))


def _kill_after_rename(monkeypatch, k: int) -> None:
    real, calls = os.replace, [0]

    def replace(src, dst):
        real(src, dst)
        calls[0] += 1
        if calls[0] == k:
            raise Killed

    monkeypatch.setattr(ck.os, "replace", replace)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kill_after_each_rename_reads_the_new_generation(tmp_path, monkeypatch, k):
    prefix = tmp_path / "last"
    ck.save_checkpoint(prefix, *_generation(1.0, 1))
    with monkeypatch.context() as m:
        _kill_after_rename(m, k)
        with pytest.raises(Killed):
            ck.save_checkpoint(prefix, *_generation(2.0, 2))
    # weights are renamed first, so the new generation is whole from the first rename on
    _assert_reads(prefix, 2.0, 2)
    assert ck.recover_checkpoint(prefix) is (k < 3)
    assert sorted(os.listdir(tmp_path)) == ["last.json", "last.safetensors", "last.state.pt"]
    _assert_reads(prefix, 2.0, 2)
    ck.save_checkpoint(prefix, *_generation(3.0, 3))  # and the next save works
    _assert_reads(prefix, 3.0, 3)


def test_kill_while_writing_keeps_the_old_generation(tmp_path, monkeypatch):
    prefix = tmp_path / "last"
    ck.save_checkpoint(prefix, *_generation(1.0, 1))

    def killed_json_dump(*args, **kwargs):
        raise Killed  # weights and state temporaries written, metadata not: no rename yet

    with monkeypatch.context() as m:
        m.setattr(ck.json, "dump", killed_json_dump)
        with pytest.raises(Killed):
            ck.save_checkpoint(prefix, *_generation(2.0, 2))
    stray = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(stray) == 3  # killed: no clean-up ran
    _assert_reads(prefix, 1.0, 1)
    assert ck.recover_checkpoint(prefix) is False
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    _assert_reads(prefix, 1.0, 1)


def test_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        paths = ck.save_checkpoint(tmp_path / "best", *_generation(1.0, 1))
    finally:
        os.umask(old)
    for path in paths.files():
        assert os.stat(path).st_mode & 0o777 == 0o644, path  # what open() would give


@pytest.mark.parametrize(
    "target, error",
    [
        ("save_file", SafetensorError("Error while serializing: IoError(Os { code: 28, "
                                      "kind: StorageFull, message: \"No space left on device\" })")),
        ("torch_save", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
                                    "pos 1216 vs 1114")),
        ("json_dump", OSError(28, "No space left on device")),
    ],
)  # fmt: skip
def test_disk_full_is_one_line_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, target, error):
    prefix = tmp_path / "last"
    ck.save_checkpoint(prefix, *_generation(1.0, 1))
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}

    def full(*args, **kwargs):
        raise error

    if target == "save_file":
        monkeypatch.setattr(ck, "save_file", full)
    elif target == "torch_save":
        monkeypatch.setattr(ck.torch, "save", full)
    else:
        monkeypatch.setattr(ck.json, "dump", full)
    with pytest.raises(ck.CheckpointWriteError) as info:
        ck.save_checkpoint(prefix, *_generation(2.0, 2))
    text = str(info.value)
    assert "\n" not in text and "no space left on device" in text and str(prefix) in text
    assert "inline_container" not in text and "SafetensorError" not in text
    after = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert after == before


def _damage(path, how: str) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:  # tampered: a valid torch archive holding an object that needs pickle to build
        import argparse

        torch.save({"token": "x", "payload": argparse.Namespace(a=1)}, path)


@pytest.mark.parametrize("how", ["empty", "truncated", "tampered"])
def test_damaged_resume_state_is_one_line_without_unsafe_advice(tmp_path, how):
    prefix = tmp_path / "last"
    paths = ck.save_checkpoint(prefix, *_generation(1.0, 1))
    _damage(Path(paths.state), how)
    with pytest.raises(ValueError) as info:
        ck.load_training_state(prefix)
    text = str(info.value)
    assert "\n" not in text and paths.state in text
    assert "weights_only" not in text  # torch's advice to load unsafely is never passed on
    assert not isinstance(info.value, pickle.UnpicklingError)


def test_foreign_checkpoint_path_is_named(tmp_path):
    pt = tmp_path / "x.pt"
    with pytest.raises(FileNotFoundError) as info:
        ck.load_weights(pt)
    assert str(pt) in str(info.value) and "x.pt.safetensors" not in str(info.value)
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(ValueError, match="is not a pointset checkpoint"):
        ck.load_weights(pt)


def test_metadata_is_strict_json(tmp_path):
    paths = ck.save_checkpoint(tmp_path / "best", {"w": torch.zeros(1)}, {"loss": float("nan")})
    text = Path(paths.meta).read_text()
    assert "NaN" not in text and ck.load_metadata(paths.meta)["loss"] is None
