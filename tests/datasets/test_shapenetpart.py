"""Tests for pointset/datasets/shapenetpart.py on tiny files in the two release layouts,
written to ``tmp_path`` (oracle: the arrays the tests wrote)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from dataset_files import write_h5, write_shapenetpart_h5, write_shapenetpart_normals
from torch.utils.data import DataLoader

from pointset.datasets import DatasetError
from pointset.datasets.shapenetpart import (
    CATEGORIES,
    NORMALS_FOLDER,
    NUM_PARTS,
    PART_NAMES,
    ShapeNetPart,
    category_part_mask,
    category_parts,
    part_category,
)


@pytest.fixture
def normals_root(tmp_path):
    write_shapenetpart_normals(tmp_path / NORMALS_FOLDER)
    return tmp_path


@pytest.fixture
def h5_root(tmp_path):
    return write_shapenetpart_h5(tmp_path / "hdf5_data", n=4, points=64)


def test_standard_part_table():
    """Oracle: the standard table (airplane 0-3, ..., motorbike 30-35, table 47-49)."""
    assert NUM_PARTS == 50 and len(CATEGORIES) == 16 and len(PART_NAMES) == 50
    assert category_parts(0) == range(0, 4)
    assert category_parts(10) == range(30, 36)
    assert category_parts(15) == range(47, 50)
    owner = part_category()
    assert owner[[0, 3, 4, 29, 30, 49]].tolist() == [0, 0, 1, 9, 10, 15]
    mask = category_part_mask()
    assert mask.shape == (16, 50) and mask.sum().item() == 50
    assert mask[4].nonzero().flatten().tolist() == [12, 13, 14, 15]
    with pytest.raises(ValueError, match="category id 16"):
        category_parts(16)


def test_normals_release_items_match_the_written_files(normals_root):
    """Oracle: the txt rows written by the test (xyz, normals, part per point)."""
    folder = normals_root / NORMALS_FOLDER
    ds = ShapeNetPart(normals_root, "train", num_points=32, seed=0)
    assert ds.format == "normals" and len(ds) == 3
    assert ds.categories.tolist() == [0, 4, 10]  # sorted by category
    item = ds[1]
    assert item["points"].shape == (6, 32) and item["points"].dtype == torch.float32
    assert item["labels"].shape == (32,) and item["labels"].dtype == torch.int64
    assert item["normals"].shape == (3, 32) and int(item["category"]) == 4
    assert torch.equal(item["points"][3:], item["normals"])
    rows = np.loadtxt(next((folder / "03001627").glob("*.txt")))
    xyz = item["points"][:3].T.double().numpy()
    nearest = np.linalg.norm(xyz[:, None] - rows[None, :, :3], axis=-1).argmin(1)
    np.testing.assert_allclose(xyz, rows[nearest, :3], atol=1e-6)
    np.testing.assert_allclose(item["normals"].T.numpy(), rows[nearest, 3:6], atol=1e-6)
    np.testing.assert_array_equal(item["labels"].numpy(), rows[nearest, 6].astype(int))
    assert set(item["labels"].tolist()) <= set(category_parts(4))
    assert len(ShapeNetPart(normals_root, "trainval", num_points=8)) == 4
    assert ShapeNetPart(normals_root, "test", num_points=8).categories.tolist() == [0, 15]


def test_sampling_is_seeded_and_changes_with_epoch(normals_root):
    """Oracle: equality of repeated draws; the epoch and seed enter the draw."""
    a = ShapeNetPart(normals_root, "train", num_points=64, seed=3)
    b = ShapeNetPart(normals_root, "train", num_points=64, seed=3)
    assert torch.equal(a[0]["points"], b[0]["points"])
    assert torch.equal(a[0]["points"], a[0]["points"])
    b.set_epoch(1)
    assert not torch.equal(a[0]["points"], b[0]["points"])
    exact = ShapeNetPart(normals_root, "train", num_points=37, seed=3)[1]  # chair: 37 points
    rows = np.loadtxt(next((normals_root / NORMALS_FOLDER / "03001627").glob("*.txt")))
    np.testing.assert_allclose(exact["points"][:3].T.numpy(), rows[:, :3], atol=1e-6)
    no_repeat = ShapeNetPart(normals_root, "train", num_points=30, replace=False)[0]
    assert torch.unique(no_repeat["points"], dim=1).shape[1] == 30


def test_batches_through_the_default_collate(normals_root):
    """Oracle: the documented batch layout."""
    ds = ShapeNetPart(normals_root, "trainval", num_points=16, use_normals=False)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["points"].shape == (4, 3, 16) and batch["normals"].shape == (4, 3, 16)
    assert batch["labels"].shape == (4, 16) and batch["category"].tolist() == [0, 1, 4, 10]


def test_h5_release_items(h5_root):
    """Oracle: the h5 arrays written by the test."""
    ds = ShapeNetPart(h5_root.parent, "test", num_points=64, use_normals=False)
    assert ds.format == "h5" and len(ds) == 4
    with h5py.File(h5_root / "ply_data_test0.h5") as f:
        data, label, pid = f["data"][()], f["label"][()], f["pid"][()]
    item = ds[2]
    np.testing.assert_array_equal(item["points"].numpy(), data[2].T)
    np.testing.assert_array_equal(item["labels"].numpy(), pid[2])
    assert int(item["category"]) == int(label[2, 0]) and "normals" not in item
    assert len(ShapeNetPart(h5_root, "trainval", num_points=16, use_normals=False)) == 8
    with pytest.raises(DatasetError, match="no 'normal' dataset; pass use_normals=False"):
        ShapeNetPart(h5_root, "test")
    write_shapenetpart_h5(h5_root, normals=True)
    assert ShapeNetPart(h5_root, "test", num_points=64)[0]["points"].shape == (6, 64)


def test_h5_without_pid_raises_one_line(h5_root):
    """Oracle: the missing key named in a one-line DatasetError."""
    write_h5(
        h5_root / "ply_data_test0.h5",
        data=np.zeros((2, 8, 3), np.float32),
        label=np.zeros((2, 1), np.uint8),
    )
    with pytest.raises(DatasetError, match="has no 'pid' dataset") as err:
        ShapeNetPart(h5_root, "test", num_points=8, use_normals=False)
    assert "\n" not in str(err.value)


def test_category_id_above_15_and_bad_part_labels_raise(h5_root):
    """Oracle: the offending values written into the files."""
    path = h5_root / "ply_data_test0.h5"
    with h5py.File(path, "r+") as f:
        f["label"][1] = 16
    with pytest.raises(DatasetError, match=r"category id 16 of shape 1 .*out of range \[0, 15\]"):
        ShapeNetPart(h5_root, "test", num_points=8, use_normals=False)
    with h5py.File(path, "r+") as f:
        f["label"][1] = 0
        f["pid"][1] = np.arange(64) % 4  # airplane parts
        f["pid"][1, 5] = 50
    with pytest.raises(DatasetError, match=r"part label 50 is out of range \[0, 49\]"):
        ShapeNetPart(h5_root, "test", num_points=8, use_normals=False)
    with h5py.File(path, "r+") as f:
        f["pid"][1, 5] = 12  # a chair part on an airplane
    with pytest.raises(DatasetError, match=r"part label 12 is not a part of category 0"):
        ShapeNetPart(h5_root, "test", num_points=8, use_normals=False)


def test_truncated_files_raise_one_line(normals_root, h5_root):
    """Oracle: files cut short by the test."""
    path = h5_root / "ply_data_val0.h5"
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DatasetError, match="not a readable HDF5 file") as err:
        ShapeNetPart(h5_root, "val", num_points=8, use_normals=False)
    assert "\n" not in str(err.value)

    txt = next((normals_root / NORMALS_FOLDER / "02691156").glob("*.txt"))
    lines = txt.read_text().splitlines()
    cut = lines[: len(lines) // 2] + [" ".join(lines[len(lines) // 2].split()[:3])]
    txt.write_text("\n".join(cut))
    ds = ShapeNetPart(normals_root, "train", num_points=8)
    with pytest.raises(DatasetError, match="expected 7 numbers .*truncated or corrupt"):
        ds[0]
    listing = normals_root / NORMALS_FOLDER / "train_test_split" / "shuffled_val_file_list.json"
    listing.write_text(listing.read_text()[:-5])
    with pytest.raises(DatasetError, match="not valid JSON"):
        ShapeNetPart(normals_root, "val")


def test_txt_labels_out_of_range_and_missing_files(normals_root):
    """Oracle: the values and files the test changed."""
    folder = normals_root / NORMALS_FOLDER
    txt = next((folder / "03790512").glob("*.txt"))  # motorbike: parts 30-35
    rows = np.loadtxt(txt)
    rows[3, 6] = 47
    np.savetxt(txt, rows, fmt="%.6f")
    with pytest.raises(DatasetError, match="part label 47 is not a part of category 10"):
        ShapeNetPart(normals_root, "train", num_points=8)[2]
    txt.unlink()
    with pytest.raises(DatasetError, match="1 files are missing"):
        ShapeNetPart(normals_root, "train")
    (normals_root / "empty").mkdir()
    with pytest.raises(DatasetError, match="no ShapeNetPart release in .*pointset download"):
        ShapeNetPart(normals_root / "empty", "train")
    with pytest.raises(DatasetError, match="does not exist"):
        ShapeNetPart(normals_root / "nowhere", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        ShapeNetPart(normals_root, "validation")
