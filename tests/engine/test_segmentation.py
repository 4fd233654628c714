"""``task: segmentation`` in the trainer, ``pointset eval`` and ``pointset segment``.

Oracles: the confusion matrix recomputed from the checkpoint's predictions, the run's own
records (evaluation of the saved weights reproduces them), hand-made configs that must be
refused, and for ``segment`` the class histogram recomputed from the written cloud."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seg_testmodel  # noqa: E402,F401  (registers test_point_seg)

from pointset import read  # noqa: E402
from pointset.cli import main  # noqa: E402
from pointset.engine import ConfigError, Trainer, load_config  # noqa: E402
from pointset.engine.segmentation import SegSplit, masked_prediction, segment_points  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_SEG = REPO / "configs" / "tests" / "tiny_seg.yaml"


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory) -> Path:
    from pointset.datasets import SyntheticScenes

    root = tmp_path_factory.mktemp("tiny_scenes")
    SyntheticScenes(root, "train", num_points=256, train_scenes=8, test_scenes=4)
    return root


def seg_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", *extra]


def seg_config(root: Path, out: Path, *extra: str):
    return load_config(TINY_SEG, seg_overrides(root, out, *extra))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, scenes_root):
    out = tmp_path_factory.mktemp("seg_run")
    lines: list[str] = []
    n = torch.get_num_threads()
    final = Trainer(seg_config(scenes_root, out), log=lines.append).fit()
    torch.set_num_threads(n)
    return out, final, lines


def test_fit_writes_segmentation_outputs(trained):
    out, final, lines = trained
    for name in ("best.safetensors", "last.json", "curves.png", "confusion_matrix.png",
                 "predictions.png", "metrics.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("test_miou" in r and len(r["test_iou"]) == 8 for r in records)
    assert final["test_miou"] == records[-1]["test_miou"]
    assert final["best"]["test_miou"] == max(r["test_miou"] for r in records)
    meta = json.loads((out / "last.json").read_text())
    assert meta["task"] == "segmentation" and meta["model_options"]["in_channels"] == 6
    assert any(line.startswith("final: test mIoU") for line in lines)
    assert any("floor" in line and "IoU" in line for line in lines)  # per-class lines
    assert 0.0 <= final["test_miou"] <= 1.0 and 0.0 <= records[-1]["train_acc"] <= 1.0


def test_evaluate_reproduces_the_run_and_the_confusion(trained, scenes_root, restore_threads):
    """Trainer.evaluate on the last weights gives the last record's mIoU; the confusion
    matrix equals one recomputed here from the model's argmax."""
    out, final, _ = trained
    lines: list[str] = []
    result = Trainer(seg_config(scenes_root, out), log=lines.append).evaluate(str(out / "last"))
    assert result["miou"] == pytest.approx(final["test_miou"], abs=1e-12)
    assert lines[0].startswith("test: mIoU") and len(lines) == 1 + 8
    from pointset.datasets import SyntheticScenes
    from pointset.engine.build import load_classifier

    model, _ = load_classifier(str(out / "last"))
    ds = SyntheticScenes(scenes_root, "test", num_points=256, train_scenes=8, test_scenes=4)
    with torch.no_grad():
        pred = model(ds.points.transpose(1, 2)).argmax(-1)
    cm = torch.zeros(8, 8, dtype=torch.long)
    for t, p in zip(ds.labels.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        cm[t, p] += 1
    assert torch.equal(result["confusion"], cm)


def test_eval_cli_prints_miou_and_per_class_iou(trained, scenes_root, capsys, restore_threads):
    out, _, _ = trained
    sets = [f"--set={o}" for o in seg_overrides(scenes_root, out)]
    argv = ["eval", str(TINY_SEG), "--checkpoint", str(out / "best"), *sets]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        assert main(argv) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "wall" in text and "chair" in text


def test_segment_cli_on_a_rendered_frame(trained, scenes_root, tmp_path, capsys, restore_threads):
    """A rendered scene frame -> coloured .ply and .png; the printed histogram matches the
    colours of the written cloud."""
    from pointset.datasets import SyntheticScenes
    from pointset.engine.plots import label_colors

    out, _, _ = trained
    frame = SyntheticScenes(scenes_root, "test", 256, train_scenes=8, test_scenes=4).frame(0)
    Image.fromarray(frame.color).save(tmp_path / "c.png")
    Image.fromarray(frame.depth).save(tmp_path / "d.png")
    sets = [f"--set={o}" for o in seg_overrides(scenes_root, out)]
    common = ["--config", str(TINY_SEG), "--checkpoint", str(out / "best"), *sets]
    assert main(["segment", str(tmp_path / "c.png"), str(tmp_path / "d.png"),
                 "--out", str(tmp_path / "s.ply"), *common]) == 0  # fmt: skip
    text = capsys.readouterr().out
    cloud = read(tmp_path / "s.ply")
    assert cloud.num_points == int((frame.depth > 0).sum())
    table = torch.from_numpy(label_colors(8)).float()
    cls = (cloud.x.unsqueeze(1) - table).abs().sum(-1).argmin(1)
    counts = torch.bincount(cls, minlength=8)
    for name, c in zip(
        ("floor", "wall", "sphere", "cube", "cylinder", "cone", "table", "chair"), counts
    ):
        if c:
            assert f"{name}" in text and f" {int(c)} " in text
    assert main(["segment", str(tmp_path / "c.png"), str(tmp_path / "d.png"),
                 "--out", str(tmp_path / "s.png"), *common]) == 0  # fmt: skip
    assert Image.open(tmp_path / "s.png").size[0] > 100
    # a point file goes through the same path
    assert (
        main(["segment", str(tmp_path / "s.ply"), "--out", str(tmp_path / "t.png"), *common]) == 0
    )


def test_segment_cli_on_shared_rgbd_frames(shared_dir, trained, scenes_root, tmp_path, capsys,
                                           restore_threads):  # fmt: skip
    """Captured frames (TUM: depth scale 5000) give a coloured cloud of every valid pixel."""
    out, _, _ = trained
    rgbd = shared_dir / "data" / "rgbd" / "tum"
    if not rgbd.is_dir():
        pytest.skip("no TUM frame in the reference data")
    sets = [f"--set={o}" for o in seg_overrides(scenes_root, out)]
    argv = ["segment", str(rgbd / "color.png"), str(rgbd / "depth.png"), "--depth-scale", "5000",
            "--depth-trunc", "4", "--out", str(tmp_path / "tum.ply"), "--config", str(TINY_SEG),
            "--checkpoint", str(out / "best"), "--max-points", "20000", *sets]  # fmt: skip
    assert main(argv) == 0
    cloud = read(tmp_path / "tum.ply")
    assert cloud.num_points == 20000 and cloud.x.shape == (20000, 3)
    assert "%" in capsys.readouterr().out


def test_segment_points_labels_every_point_once():
    """Oracle: a model that returns a class from each point's tag channel; every point of a
    cloud whose size is not a multiple of the chunk must get its own tag back."""

    class TagModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # [B, C, N] -> one-hot of channel 3
            return torch.nn.functional.one_hot(x[:, 3].long(), 5).float()

    pts = torch.cat([torch.rand(103, 3), (torch.arange(103) % 5).float().unsqueeze(1)], 1)
    labels = segment_points(TagModel(), pts, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, torch.arange(103) % 5)


def test_part_masking():
    """Scores of parts outside the shape's category never win."""
    logits = torch.tensor([[[5.0, 1.0, 0.0, 4.0]], [[5.0, 1.0, 0.0, 4.0]]])
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    pred = masked_prediction(logits, torch.tensor([0, 1]), mask)
    assert pred.tolist() == [[0], [3]]


def test_config_and_model_mismatches(scenes_root, tmp_path, restore_threads):
    with pytest.raises(ConfigError, match="task"):
        seg_config(scenes_root, tmp_path, "task=detection")
    with pytest.raises(ConfigError, match="unknown config key 'train.bogus'"):
        seg_config(scenes_root, tmp_path, "train.bogus=1")
    with pytest.raises(ValueError, match="classification model"):
        Trainer(seg_config(scenes_root, tmp_path / "a", "model.name=pointmlp_elite")).fit()
    with pytest.raises(ValueError, match="set task: segmentation"):
        Trainer(seg_config(scenes_root, tmp_path / "b", "task=classification")).fit()
    with pytest.raises(ValueError, match="unknown segmentation augmentation"):
        Trainer(seg_config(scenes_root, tmp_path / "c", "data.augment=[random_shift]")).fit()
    with pytest.raises(ValueError, match="no per-point labels"):
        Trainer(seg_config(scenes_root, tmp_path / "d", "data.name=synthetic_shapes")).fit()


def test_model_loss_is_used(scenes_root, tmp_path, monkeypatch, restore_threads):
    """A model with a ``loss`` method is trained with it (the protocol's hook)."""
    calls = []
    original = seg_testmodel.TinyPointSegWithLoss.loss

    def spy(self, output, labels):
        calls.append(labels.shape)
        return original(self, output, labels)

    monkeypatch.setattr(seg_testmodel.TinyPointSegWithLoss, "loss", spy)
    cfg = seg_config(scenes_root, tmp_path, "train.epochs=1", "model.options.with_loss=true")
    Trainer(cfg, log=lambda s: None).fit()
    assert calls and calls[0] == (4, 256)


def test_seg_split_checks_shapes():
    with pytest.raises(ValueError, match="labels must be"):
        SegSplit(torch.zeros(2, 5, 6), torch.zeros(2, 4, dtype=torch.long), ["a"])


def test_partseg_call_trains_and_reports_shape_mious(tmp_path, restore_threads):
    """``call: partseg`` (pointmlp_partseg, shrunk) on tiny ShapeNetPart files: NLL training,
    masked predictions (never a part of another category) and instance / class mIoU equal
    to the ShapeNetPart metrics recomputed from the checkpoint's masked predictions."""
    sys.path.insert(0, str(REPO / "tests" / "datasets"))
    from dataset_files import write_shapenetpart_normals

    from pointset.datasets.shapenetpart import NORMALS_FOLDER
    from pointset.engine.metrics import (
        class_miou,
        instance_miou,
        shapenet_part_ious,
        shapenet_part_predict,
        shapenet_part_totals,
    )
    from pointset.engine.segmentation import forward, load_seg_split

    write_shapenetpart_normals(tmp_path / "data" / NORMALS_FOLDER)
    small = (
        "{points: 32, embed_dim: 8, dim_expansion: [2, 2], pre_blocks: [1, 1], "
        "pos_blocks: [1, 1], k_neighbors: [6, 6], reducers: [4, 2], de_dims: [16, 8], "
        "de_blocks: [1, 1], gmp_dim: 8, cls_dim: 8}"
    )
    cfg = load_config(
        REPO / "configs" / "shapenetpart" / "pointmlp.yaml",
        [f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}", "train.epochs=2",
         "data.num_points=32", "data.batch_size=3", "data.eval_batch_size=2",
         f"model.options={small}", "train.threads=1", "train.progress=false"],
    )  # fmt: skip
    lines: list[str] = []
    final = Trainer(cfg, log=lines.append).fit()
    assert "test_instance_miou" in final and "test_class_miou" in final
    from pointset.engine.build import load_classifier

    model, _ = load_classifier(str(tmp_path / "run" / "last"))
    test = load_seg_split(cfg.data, "test")
    x, y = test.batch(torch.arange(len(test)), torch.device("cpu"))
    with torch.no_grad():
        logp = forward(model, "partseg", x)
    pred = shapenet_part_predict(logp, x.category)
    totals = shapenet_part_totals(shapenet_part_ious(pred, y, x.category), x.category)
    assert final["test_instance_miou"] == pytest.approx(instance_miou(totals), abs=1e-9)
    assert final["test_class_miou"] == pytest.approx(class_miou(totals), abs=1e-9)
    assert any("instance mIoU" in line for line in lines)


def test_demo_configs_validate_and_build(restore_threads):
    """The shipped segmentation configs load; the demo's model builds and maps a batch of
    the demo's size to per-point logits of the 8 scene classes."""
    from pointset.models import create_model, is_model

    demo = load_config(REPO / "configs" / "demo" / "segmentation.yaml")
    kmax = load_config(REPO / "configs" / "demo" / "segmentation_kmax.yaml")
    assert demo.task == kmax.task == "segmentation"
    assert demo.data == kmax.data and demo.train == kmax.train and demo.seed == kmax.seed
    model = create_model(demo.model.name, num_classes=8, in_channels=6, **demo.model.options)
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 6, demo.data.num_points))
    assert out.shape == (1, demo.data.num_points, 8)
    if is_model(kmax.model.name):
        create_model(kmax.model.name, num_classes=8, in_channels=6, **kmax.model.options)


def test_segment_cli_errors_are_one_line(trained, scenes_root, tmp_path, capsys):
    """A wrong output suffix and a missing frame end with a one-line error, exit code 2."""
    out, _, _ = trained
    sets = [f"--set={o}" for o in seg_overrides(scenes_root, out)]
    common = ["--config", str(TINY_SEG), "--checkpoint", str(out / "best"), *sets]
    assert main(["segment", "c.png", "d.png", "--out", str(tmp_path / "x.txt"), *common]) == 2
    assert main(["segment", str(tmp_path / "c.png"), str(tmp_path / "d.png"),
                 "--out", str(tmp_path / "x.ply"), *common]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and ".ply or .png" in err[0] and "does not exist" in err[1]
