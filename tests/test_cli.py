"""The ``pointset`` command: ``--help`` everywhere, one-line errors for malformed input
(traceback only with ``--debug``), and the convert / bench / eval paths."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointset.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tests" / "tiny.yaml"
SCAN_TRAIN = "main_split/training_objectdataset_augmentedrot_scale75.h5"
SCAN_TEST = "main_split/test_objectdataset_augmentedrot_scale75.h5"
COMMANDS = ("train", "eval", "segment", "download", "convert", "viz", "bench", "info", "demo")


@pytest.mark.parametrize("command", (None, *COMMANDS))
def test_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pointset" in out
    if command is None:
        assert all(c in out for c in COMMANDS)


def test_every_subcommand_is_tested():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def _scan_root(tmp_path: Path, train: dict | None = None, truncate: bool = False) -> Path:
    """A ScanObjectNN-layout root whose training file holds ``train`` arrays."""
    root = tmp_path / "scan"
    (root / "main_split").mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = {"data": rng.normal(size=(4, 64, 3)).astype(np.float32), "label": np.arange(4)}
    for rel, arrays in ((SCAN_TRAIN, train if train is not None else good), (SCAN_TEST, good)):
        with h5py.File(root / rel, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    if truncate:
        path = root / SCAN_TRAIN
        path.write_bytes(path.read_bytes()[:900])
    return root


def _train_scan(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train", str(TINY), "--set", "data.name=scanobjectnn", "--set", f"data.root={root}",
        "--set", "data.options={}", "--set", f"output_dir={tmp_path / 'run'}", *extra,
    ]  # fmt: skip


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pointset {argv[0]}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_truncated_h5(tmp_path, capsys):
    root = _scan_root(tmp_path, truncate=True)
    _one_line_error(capsys, _train_scan(root, tmp_path), "training_objectdataset", "truncated")


def test_h5_without_data(tmp_path, capsys):
    root = _scan_root(
        tmp_path, train={"points": np.zeros((4, 64, 3), np.float32), "label": np.arange(4)}
    )
    _one_line_error(capsys, _train_scan(root, tmp_path), "no 'data'")


def test_labels_out_of_range(tmp_path, capsys):
    data = np.zeros((4, 64, 3), np.float32)
    root = _scan_root(tmp_path, train={"data": data, "label": np.array([0, 1, 15, 2])})
    _one_line_error(capsys, _train_scan(root, tmp_path), "label 15", "out of range")


def test_missing_data_root(tmp_path, capsys):
    root = tmp_path / "nowhere"
    _one_line_error(capsys, _train_scan(root, tmp_path), str(root), "does not exist", "download")


def test_unknown_config_key(capsys):
    _one_line_error(
        capsys,
        ["train", str(TINY), "--set", "train.epoch=1"],
        "train.epoch",
        "valid keys",
        "epochs",
    )


def test_debug_shows_the_exception(capsys):
    from pointset.engine import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", str(TINY), "--set", "train.epoch=1"])


def test_missing_config_and_checkpoint(tmp_path, capsys):
    _one_line_error(capsys, ["train", str(tmp_path / "x.yaml")], "x.yaml", "does not exist")
    _one_line_error(
        capsys,
        ["eval", str(TINY), "--checkpoint", str(tmp_path / "best"), "--set",
         f"data.root={tmp_path / 'd'}"],
        "does not exist",
    )  # fmt: skip


def test_convert_rgbd_image_and_file(tmp_path, capsys):
    from PIL import Image

    from pointset import read
    from pointset.datasets.render import demo_scene, render_rgbd

    color, depth, k = render_rgbd(demo_scene(), width=64, height=48)
    Image.fromarray(color).save(tmp_path / "color.png")
    Image.fromarray(depth).save(tmp_path / "depth.png")
    ply = tmp_path / "frame.ply"
    argv = ["convert", str(tmp_path / "color.png"), str(ply), "--depth", str(tmp_path / "depth.png"),
            "--intrinsics", ",".join(map(str, k))]  # fmt: skip
    assert main(argv) == 0
    cloud = read(ply)
    assert cloud.pos.shape[1] == 3 and 0 < cloud.num_nodes <= 64 * 48
    assert main(["convert", str(ply), str(tmp_path / "frame.npz")]) == 0
    assert read(tmp_path / "frame.npz").num_nodes == cloud.num_nodes
    assert main(["convert", str(ply), str(tmp_path / "frame.pcd"), "--compress"]) == 0
    assert b"DATA binary_compressed" in (tmp_path / "frame.pcd").read_bytes()[:1000]
    assert torch.equal(read(tmp_path / "frame.pcd").pos, cloud.pos)
    assert main(["convert", str(tmp_path / "color.png"), str(tmp_path / "img.npz")]) == 0
    assert read(tmp_path / "img.npz").num_nodes == 64 * 48
    capsys.readouterr()
    _one_line_error(
        capsys, ["convert", str(tmp_path / "color.png"), str(ply), "--depth", str(tmp_path / "depth.png"),
                 "--intrinsics", "1,2,3"], "--intrinsics",
    )  # fmt: skip
    _one_line_error(capsys, ["convert", str(tmp_path / "none.ply"), str(ply)], "none.ply")
    _one_line_error(
        capsys, ["convert", str(ply), str(tmp_path / "again.ply"), "--compress"], "for .pcd files"
    )


def test_bench_lists_scripts(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "ops" in out
    _one_line_error(capsys, ["bench", "no_such_benchmark"], "no_such_benchmark")


def test_download_unknown_dataset(tmp_path, capsys):
    _one_line_error(
        capsys, ["download", "no_such_dataset", "--root", str(tmp_path)], "no_such_dataset"
    )


def test_train_then_eval(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    data, out = tmp_path / "data", tmp_path / "run"
    sets = ["--set", f"data.root={data}", "--set", f"output_dir={out}"]
    try:
        assert main(["train", str(TINY), *sets, "--set", "train.epochs=1"]) == 0
        assert "final: test OA" in capsys.readouterr().out
        _one_line_error(capsys, ["train", str(TINY), *sets], "--resume")  # refuses to overwrite
        assert main(["eval", str(TINY), "--checkpoint", str(out / "best"), *sets]) == 0
    finally:
        torch.set_num_threads(threads)
    out_text = capsys.readouterr().out
    assert "test: OA" in out_text and (out / "eval_test_confusion_matrix.png").is_file()

    from pointset.engine import load_classifier

    model, meta = load_classifier(str(out / "best"))
    assert not model.training and meta["input"] == "points" and len(meta["class_names"]) == 15
    logits = model(torch.rand(2, 3, 64))
    assert logits.shape == (2, 15)


def test_viz_image_and_point_file(tmp_path, capsys):
    from PIL import Image

    from pointset import PointSet, write

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    assert (
        main(["viz", str(tmp_path / "img.png"), "--size", "32", "--out", str(tmp_path / "a.png")])
        == 0
    )
    assert (tmp_path / "a.png").stat().st_size > 0
    import torch

    cloud = PointSet(pos=torch.rand(300, 3), x=torch.rand(300, 3))
    write(tmp_path / "cloud.ply", cloud)
    argv = ["viz", str(tmp_path / "cloud.ply"), "--centers", "8", "--out", str(tmp_path / "b.png")]
    assert main(argv) == 0 and (tmp_path / "b.png").stat().st_size > 0
    capsys.readouterr()
    _one_line_error(
        capsys, ["viz", str(tmp_path / "cloud.ply"), "--model", "coc_tiny"], "apply to images"
    )
    _one_line_error(
        capsys, ["viz", str(tmp_path / "img.png"), "--model", "pointmlp"], "image model"
    )


def test_folder_given_as_a_file(tmp_path, capsys):
    """Oracle: the file system. A folder used to be reported as "does not exist"."""
    folder = tmp_path / "frame.png"
    folder.mkdir()
    for command in ("convert", "viz"):
        argv = [command, str(folder), str(tmp_path / "out.ply")]
        if command == "viz":
            argv = [command, str(folder), "--out", str(tmp_path / "v.png")]
        err = _one_line_error(capsys, argv, "frame.png is a folder, not a file")
        assert "does not exist" not in err
    root = _scan_root(tmp_path)
    (root / SCAN_TRAIN).unlink()
    (root / SCAN_TRAIN).mkdir()
    _one_line_error(capsys, _train_scan(root, tmp_path), "is a folder, not an HDF5 file")
