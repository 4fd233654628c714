"""RGBD folders with label images (oracle: from_rgbd on the same arrays and the label image
read at each point's pixel), and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointset import from_rgbd
from pointset.datasets import DatasetError, RGBDSegFolder
from pointset.datasets.render import Box, Sphere, render_rgbd

SOLIDS = [
    Sphere((-0.3, 0.1, 1.5), 0.25, (0.8, 0.2, 0.2), label=2),
    Box((0.1, -0.1, 1.3), (0.45, 0.4, 1.7), (0.2, 0.3, 0.8), label=3),
]
CLASSES = ["floor", "wall", "ball", "box"]


def make_folder(root: Path, frames: int = 2, size=(40, 30), label_size=None) -> Path:
    """Frames with 8-bit label PNGs stored as ``label + 1`` (0 = unlabelled)."""
    for sub in ("color", "depth", "label"):
        (root / sub).mkdir(parents=True)
    entries = []
    for i in range(frames):
        color, depth, label, k = render_rgbd(
            SOLIDS, *size, floor_label=0, wall_label=1, seed=i, noise_std=0.001 * i,
            return_labels=True,
        )  # fmt: skip
        stored = (label + 1).astype(np.uint8)
        stored[0, :5] = 0  # a few unlabelled pixels
        if label_size is not None:
            stored = np.zeros(label_size[::-1], np.uint8)
        Image.fromarray(color).save(root / f"color/{i}.png")
        Image.fromarray(depth).save(root / f"depth/{i}.png")
        Image.fromarray(stored).save(root / f"label/{i}.png")
        entries.append(
            {"color": f"color/{i}.png", "depth": f"depth/{i}.png", "label": f"label/{i}.png"}
        )
    index = {
        "classes": CLASSES, "intrinsics": list(k), "depth_scale": 1000.0, "depth_trunc": 5.0,
        "label_offset": 1, "ignore_value": 0, "frames": entries,
    }  # fmt: skip
    (root / "frames.json").write_text(json.dumps(index))
    return root


def test_points_and_labels_match_the_frames(tmp_path):
    root = make_folder(tmp_path / "f")
    ds = RGBDSegFolder(root, num_points=200)
    assert ds.points.shape == (2, 200, 6) and ds.labels.shape == (2, 200)
    assert ds.class_names == tuple(CLASSES)
    full = ds.load_frame(1)
    color = np.asarray(Image.open(root / "color/1.png"))
    depth = np.asarray(Image.open(root / "depth/1.png"))
    ref = from_rgbd(
        color, depth, json.loads((root / "frames.json").read_text())["intrinsics"], 1000.0, 5.0
    )
    np.testing.assert_array_equal(full.pos.numpy(), ref.pos.numpy())
    stored = np.asarray(Image.open(root / "label/1.png")).astype(np.int64)
    want = np.where(stored == 0, -1, stored - 1)[ref.pixel[:, 0], ref.pixel[:, 1]]
    np.testing.assert_array_equal(full.y.numpy(), want)
    item = ds[1]
    r, c = item.pixel[:, 0].numpy(), item.pixel[:, 1].numpy()
    np.testing.assert_array_equal(item.y.numpy(), np.where(stored == 0, -1, stored - 1)[r, c])
    assert set(ds.labels.unique().tolist()) <= {-1, 0, 1, 2, 3}
    assert {2, 3} <= set(ds.labels.unique().tolist())


def test_label_image_of_another_size(tmp_path):
    root = make_folder(tmp_path / "f", frames=1, label_size=(20, 30))
    with pytest.raises(
        DatasetError, match=r"label image .* is 20x30 .* depth image .* is 40x30"
    ) as e:
        RGBDSegFolder(root)
    assert "\n" not in str(e.value)


def test_labels_out_of_range(tmp_path):
    root = make_folder(tmp_path / "f", frames=1)
    stored = np.asarray(Image.open(root / "label/0.png")).copy()
    stored[3, 3] = 9  # class 8 of 4
    Image.fromarray(stored).save(root / "label/0.png")
    with pytest.raises(DatasetError, match="holds value 9, outside the 4 classes") as e:
        RGBDSegFolder(root)
    assert "\n" not in str(e.value)


def test_missing_files_and_classes(tmp_path):
    root = make_folder(tmp_path / "f", frames=1)
    (root / "label/0.png").unlink()
    with pytest.raises(DatasetError, match="label image .* does not exist"):
        RGBDSegFolder(root)
    index = json.loads((root / "frames.json").read_text())
    del index["classes"]
    (root / "frames.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="'classes'"):
        RGBDSegFolder(root)
