"""One-line ``pointset`` errors (no traceback) for faults met in real use: a full disk while
saving, a damaged resume state, bad run-time settings, mismatched viz weights, a foreign
checkpoint path, a config that is not UTF-8. Oracle: the message names the file or setting
and the CLI's contract (exit code 2, one ``pointset <command>: error:`` line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pointset.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tests" / "tiny.yaml"


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pointset {argv[0]}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _sets(tmp_path, *extra):
    out = ["--set", f"data.root={tmp_path / 'data'}", "--set", f"output_dir={tmp_path / 'run'}"]
    for e in extra:
        out += ["--set", e]
    return out


def test_disk_full_while_saving(tmp_path, capsys, monkeypatch, restore_threads):
    from safetensors import SafetensorError

    from pointset.engine import checkpoint as ck

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(ck, "save_file", full)
    argv = ["train", str(TINY), *_sets(tmp_path, "train.epochs=1")]
    _one_line_error(capsys, argv, "cannot save checkpoint", "no space left on device")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A data root and a finished one-epoch run of the tiny config (trained once)."""
    n = torch.get_num_threads()
    base = tmp_path_factory.mktemp("one_epoch")
    try:
        assert main(["train", str(TINY), *_sets(base, "train.epochs=1")]) == 0
    finally:
        torch.set_num_threads(n)
    return base


@pytest.mark.parametrize("how", ["empty", "truncated", "tampered"])
def test_resume_with_damaged_state(tmp_path, one_epoch_run, capsys, restore_threads, how):
    import shutil

    shutil.copytree(one_epoch_run, tmp_path, dirs_exist_ok=True)
    state = tmp_path / "run" / "last.state.pt"
    if how == "empty":
        state.write_bytes(b"")
    elif how == "truncated":
        state.write_bytes(state.read_bytes()[:300])
    else:
        import argparse

        torch.save({"payload": argparse.Namespace(x=1)}, state)
    capsys.readouterr()
    argv = ["train", str(TINY), *_sets(tmp_path, "train.epochs=2"), "--resume"]
    err = _one_line_error(capsys, argv, str(state))
    assert "weights_only" not in err


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("train.threads=0", "train.threads"),
        ("train.threads=-1", "train.threads"),
        ("train.device=tpu", "train.device"),
        ("train.lr=.inf", "train.lr"),
    ],
)
def test_bad_runtime_settings(tmp_path, capsys, setting, needle):
    _one_line_error(capsys, ["train", str(TINY), *_sets(tmp_path, setting)], needle)


def test_viz_with_mismatched_weights(tmp_path, capsys):
    from PIL import Image

    from pointset.engine import save_checkpoint

    prefix = tmp_path / "ck" / "best"
    meta = {"model": "coc_tiny", "num_classes": 10, "input": "image", "model_options": {}}
    save_checkpoint(prefix, {"not.a.coc.key": torch.zeros(2)}, meta)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    argv = ["viz", str(tmp_path / "i.png"), "--checkpoint", str(prefix), "--size", "32"]
    _one_line_error(capsys, argv, f"checkpoint {prefix} does not fit model 'coc_tiny'")


def test_eval_of_a_foreign_checkpoint_path(tmp_path, capsys):
    pt = tmp_path / "x.pt"
    err = _one_line_error(capsys, ["eval", str(TINY), "--checkpoint", str(pt)], str(pt))
    assert "x.pt.safetensors" not in err
    torch.save({"w": torch.zeros(1)}, pt)
    _one_line_error(
        capsys, ["eval", str(TINY), "--checkpoint", str(pt)], "not a pointset checkpoint"
    )


def test_config_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: {name: caf\u00e9}\n".encode("latin-1"))
    _one_line_error(capsys, ["train", str(path)], str(path), "not UTF-8")
