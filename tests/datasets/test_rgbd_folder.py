"""RGBD folders of frames rendered with pointset.datasets.render (oracle: from_rgbd on the
same arrays)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointset import from_rgbd
from pointset.datasets import DatasetError, RGBDFolder
from pointset.datasets.render import Box, Sphere, render_rgbd

SCENES = {
    "ball": [Sphere((0.0, 0.1, 1.5), 0.3, (0.8, 0.2, 0.2))],
    "box": [Box((-0.25, -0.1, 1.3), (0.25, 0.4, 1.7), (0.2, 0.3, 0.8))],
}


def make_folder(root: Path, size=(40, 30)) -> Path:
    """Two frames per class, 40x30 pixels, written as PNGs with a frames.json."""
    (root / "color").mkdir(parents=True)
    (root / "depth").mkdir()
    frames = []
    for i, (name, solids) in enumerate([(n, s) for n, s in SCENES.items() for _ in range(2)]):
        color, depth, k = render_rgbd(solids, *size, noise_std=0.002 * (i % 2), seed=i)
        Image.fromarray(color).save(root / f"color/{i}.png")
        Image.fromarray(depth).save(root / f"depth/{i}.png")
        frames.append({"color": f"color/{i}.png", "depth": f"depth/{i}.png", "label": name})
    frames[3]["depth_trunc"] = 1.6
    index = {"intrinsics": list(k), "depth_scale": 1000.0, "depth_trunc": 3.0, "frames": frames}
    (root / "frames.json").write_text(json.dumps(index))
    return root


def test_items_match_from_rgbd(tmp_path):
    root = make_folder(tmp_path)
    ds = RGBDFolder(root, num_points=64)
    assert ds.class_names == ("ball", "box") and ds.labels.tolist() == [0, 0, 1, 1]
    color = np.asarray(Image.open(root / "color/0.png"))
    depth = np.asarray(Image.open(root / "depth/0.png"))
    full = from_rgbd(color, depth, ds.frames[0].intrinsics, 1000.0, 3.0)
    assert torch.equal(ds.load_frame(0).pos, full.pos)
    item = ds[0]
    assert item.pos.shape == (64, 3) and item.x.shape == (64, 3) and item.pixel.shape == (64, 2)
    assert item.y.tolist() == [0]
    # every sampled point is a point of the full frame, with its own colour
    hit = (item.pos[:, None] == full.pos[None]).all(-1)
    assert bool(hit.any(1).all())
    assert torch.equal(item.x, full.x[hit.int().argmax(1)])


def test_per_frame_truncation_and_random_sampling(tmp_path):
    ds = RGBDFolder(make_folder(tmp_path), num_points=32, sampling="random", seed=3)
    assert ds.frames[3].depth_trunc == 1.6 and ds.frames[2].depth_trunc == 3.0
    assert float(ds.load_frame(3).pos[:, 2].max()) < 1.6
    assert torch.equal(ds[1].pos, ds[1].pos)  # seeded per item
    assert not torch.equal(ds[1].pos, RGBDFolder(ds.root, 32, "random", seed=4)[1].pos)


def test_small_frames_repeat_points(tmp_path):
    ds = RGBDFolder(make_folder(tmp_path, size=(8, 6)), num_points=100)
    item = ds[0]
    assert item.pos.shape == (100, 3)
    assert len({tuple(p) for p in item.pos.tolist()}) == ds.load_frame(0).num_points


def test_integer_labels_with_class_list(tmp_path):
    root = make_folder(tmp_path)
    index = json.loads((root / "frames.json").read_text())
    index["classes"] = ["box", "ball", "cup"]
    for f in index["frames"]:
        f["label"] = 2
    (root / "frames.json").write_text(json.dumps(index))
    assert RGBDFolder(root).labels.tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("frames"), "non-empty 'frames' list"),
        (
            lambda d: d.update(classes=["ball", "box"]) or d["frames"][0].update(label="cat"),
            "label 'cat' is not one of",
        ),
        (
            lambda d: d["frames"][1].update(depth="depth/missing.png"),
            "depth image .* does not exist",
        ),
        (lambda d: d["frames"][0].pop("color"), "must have 'color', 'depth' and 'label'"),
        (lambda d: d.update(intrinsics=[1, 2]), "intrinsics"),
        (lambda d: d["frames"][0].update(label=5), "integer labels need a 'classes' list"),
        (
            lambda d: d.update(classes=["ball", "box"]) or d["frames"][0].update(label=5),
            r"label 5 is not in \[0, 2\)",
        ),
        # a string is not a list of names (it used to be read as ['a', 'b'])
        (lambda d: d.update(classes="ab"), "'classes' must be a list of non-empty names, got 'ab'"),
        (lambda d: d.update(classes=["ball", 3]), "'classes' must be a list of non-empty names"),
        (
            lambda d: d.update(classes=["ball", "box", "ball"]),
            r"'classes' names \['ball'\] more than once",
        ),
        # a folder where an image file belongs is not reported as missing
        (
            lambda d: d["frames"][1].update(depth="depth"),
            "depth image .*depth is a folder, not a file",
        ),
    ],
)
def test_malformed_index(tmp_path, edit, match):
    root = make_folder(tmp_path)
    index = json.loads((root / "frames.json").read_text())
    edit(index)
    (root / "frames.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=match):
        RGBDFolder(root)


def test_missing_folder_and_index(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        RGBDFolder(tmp_path / "absent")
    with pytest.raises(DatasetError, match="has no frames.json"):
        RGBDFolder(tmp_path)
    (tmp_path / "frames.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        RGBDFolder(tmp_path)


def test_unreadable_image_and_empty_frame(tmp_path):
    root = make_folder(tmp_path)
    (root / "color/0.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(root / "depth/1.png")
    ds = RGBDFolder(root)
    with pytest.raises(DatasetError, match="RGBD frame 0"):
        ds[0]
    with pytest.raises(DatasetError, match="has no depth in"):
        ds[1]
