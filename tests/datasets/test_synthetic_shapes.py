"""Synthetic ScanObjectNN-format shapes: determinism, file format, atomic regeneration, and
loading through the real ScanObjectNN loader (oracle: the generator's own arrays)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from pointset.datasets import (
    SYNTHETIC_CLASSES,
    DatasetError,
    ScanObjectNN,
    SyntheticShapes,
    make_synthetic_scanobjectnn,
)
from pointset.datasets.synthetic_shapes import MARKER, generate_split, make_object

TINY = {"train_per_class": 2, "test_per_class": 1}
TRAIN = "main_split/training_objectdataset_augmentedrot_scale75.h5"
TEST = "main_split/test_objectdataset_augmentedrot_scale75.h5"


def test_fifteen_distinct_classes():
    assert len(SYNTHETIC_CLASSES) == 15 == len(set(SYNTHETIC_CLASSES))


@pytest.mark.parametrize("label", range(15))
def test_object_in_unit_sphere_with_background(label):
    pts, mask = make_object(label, np.random.default_rng(label), 2048)
    assert pts.shape == (2048, 3) and pts.dtype == np.float32 and mask.shape == (2048,)
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert 0.08 < (mask == -1).mean() < 0.32 and set(np.unique(mask)) == {-1, 0}
    # the point order is random: background is not a block at the end
    assert (mask[:1024] == -1).any()


def test_generation_is_deterministic_and_seeded():
    a = generate_split("training", 1, seed=3, num_points=256)
    b = generate_split("training", 1, seed=3, num_points=256)
    c = generate_split("training", 1, seed=4, num_points=256)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert sorted(a[1].tolist()) == list(range(15))


def test_larger_split_keeps_smaller_objects():
    small = generate_split("test", 1, num_points=128)
    large = generate_split("test", 2, num_points=128)
    for cls in (0, 7):
        obj_small = small[0][small[1] == cls][0]
        assert any(np.array_equal(obj_small, o) for o in large[0][large[1] == cls])


def test_files_in_scanobjectnn_format(tmp_path):
    root = make_synthetic_scanobjectnn(tmp_path, **TINY)
    with h5py.File(root / TRAIN) as f:
        assert f["data"].shape == (30, 2048, 3) and f["data"].dtype == np.float32
        assert f["label"].shape == (30,) and f["mask"].shape == (30, 2048)
        assert np.bincount(f["label"][()]).tolist() == [2] * 15
    marker = json.loads((root / "main_split" / MARKER).read_text())
    assert marker["fingerprint"]["class_names"] == list(SYNTHETIC_CLASSES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main_split"]  # no temp folders


def test_current_set_is_not_rewritten_and_changes_regenerate(tmp_path):
    make_synthetic_scanobjectnn(tmp_path, **TINY)
    stamp = (tmp_path / TRAIN).stat().st_mtime_ns
    make_synthetic_scanobjectnn(tmp_path, **TINY)
    assert (tmp_path / TRAIN).stat().st_mtime_ns == stamp
    with h5py.File(tmp_path / TRAIN) as f:
        before = f["data"][()]
    make_synthetic_scanobjectnn(tmp_path, seed=1, **TINY)
    with h5py.File(tmp_path / TRAIN) as f:
        assert not np.array_equal(f["data"][()], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main_split"]


def test_damaged_file_is_regenerated(tmp_path):
    make_synthetic_scanobjectnn(tmp_path, **TINY)
    raw = (tmp_path / TEST).read_bytes()
    (tmp_path / TEST).write_bytes(raw[:1000])
    make_synthetic_scanobjectnn(tmp_path, **TINY)
    assert (tmp_path / TEST).read_bytes() == raw


def test_real_scanobjectnn_files_are_never_overwritten(tmp_path):
    (tmp_path / "main_split").mkdir()
    (tmp_path / TRAIN).write_bytes(b"real data")
    with pytest.raises(DatasetError, match="not made by the synthetic generator"):
        make_synthetic_scanobjectnn(tmp_path, **TINY)
    assert (tmp_path / TRAIN).read_bytes() == b"real data"


def test_dataset_loads_through_scanobjectnn(tmp_path):
    train = SyntheticShapes(tmp_path, "train", num_points=512, **TINY)
    test = SyntheticShapes(tmp_path, "test", num_points=512, **TINY)
    assert isinstance(train, ScanObjectNN) and train.class_names == SYNTHETIC_CLASSES
    assert train.points.shape == (30, 512, 3) and len(test) == 15
    with h5py.File(tmp_path / TRAIN) as f:
        assert torch.equal(train.points, torch.from_numpy(f["data"][:, :512]))
    assert train.masks is not None and train[0].y.shape == (1,)


def test_bad_sizes_rejected(tmp_path):
    with pytest.raises(ValueError, match="train_per_class"):
        make_synthetic_scanobjectnn(tmp_path, train_per_class=0)
