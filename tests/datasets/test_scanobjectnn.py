"""ScanObjectNN loader on tiny files in the release layout (oracle: the arrays written)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from dataset_files import random_clouds, write_h5, write_scanobjectnn
from torch_geometric.loader import DataLoader

from pointset import PointSet
from pointset.datasets import SCANOBJECTNN_VARIANTS, DatasetError, ScanObjectNN, scanobjectnn_files
from pointset.ops import fps_dense


def test_class_names_official_order():
    assert ScanObjectNN.class_names[:3] == ("bag", "bin", "box")
    assert ScanObjectNN.class_names[-1] == "toilet" and len(ScanObjectNN.class_names) == 15


def test_variant_files():
    assert scanobjectnn_files("PB_T50_RS") == {
        "train": "main_split/training_objectdataset_augmentedrot_scale75.h5",
        "test": "main_split/test_objectdataset_augmentedrot_scale75.h5",
    }
    assert scanobjectnn_files("OBJ_ONLY")["test"] == "main_split_nobg/test_objectdataset.h5"
    assert scanobjectnn_files("PB_T25")["train"].endswith("_augmented25_norot.h5")
    with pytest.raises(ValueError, match="PB_T50_RS"):
        scanobjectnn_files("PB_T99")


@pytest.mark.parametrize("variant", list(SCANOBJECTNN_VARIANTS))
def test_every_variant_loads(tmp_path, variant):
    write_scanobjectnn(tmp_path, variant, n=3, points=64)
    ds = ScanObjectNN(tmp_path, variant, "test", num_points=32)
    assert ds.points.shape == (3, 32, 3) and ds.path.name.startswith("test_")


def test_first_points_items_and_masks(scanobjectnn_root):
    ds = ScanObjectNN(scanobjectnn_root, split="train")
    data, label = random_clouds(6, 2048, 15, seed=0)
    assert torch.equal(ds.points, torch.from_numpy(data[:, :1024]))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == label.tolist()
    assert ds.masks.shape == (6, 1024) and int((ds.masks == -1).sum()) == 6 * 205
    item = ds[2]
    assert isinstance(item, PointSet) and item.pos.shape == (1024, 3)
    assert item.y.shape == (1,) and item.y.dtype == torch.long
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.y.tolist() == label[:4].tolist() and batch.pos.shape == (4 * 1024, 3)


def test_fps_sampling_matches_fps_dense(scanobjectnn_root):
    ds = ScanObjectNN(scanobjectnn_root, split="test", num_points=128, sampling="fps")
    data = torch.from_numpy(random_clouds(6, 2048, 15, seed=1)[0])
    idx = fps_dense(data, 128)
    assert torch.equal(ds.points, torch.gather(data, 1, idx[..., None].expand(-1, -1, 3)))
    assert bool((idx[:, 0] == 0).all())


def test_root_may_hold_h5_files(tmp_path):
    write_scanobjectnn(tmp_path / "h5_files", n=2, points=16)
    assert len(ScanObjectNN(tmp_path, num_points=16)) == 2


def test_transform_is_applied(scanobjectnn_root):
    ds = ScanObjectNN(scanobjectnn_root, transform=lambda ps: PointSet(pos=ps.pos * 2, y=ps.y))
    assert torch.equal(ds[0].pos, ds.points[0] * 2)


def test_missing_root_names_files_and_command(tmp_path):
    with pytest.raises(DatasetError) as err:
        ScanObjectNN(tmp_path / "nowhere")
    msg = str(err.value)
    assert "training_objectdataset_augmentedrot_scale75.h5" in msg
    assert "pointset download scanobjectnn --root" in msg and "\n" not in msg


def test_missing_file(tmp_path):
    write_scanobjectnn(tmp_path, n=2, points=16)
    with pytest.raises(
        DatasetError, match="OBJ_BG train file .*training_objectdataset.h5 is missing"
    ):
        ScanObjectNN(tmp_path, "OBJ_BG")


def test_truncated_h5(scanobjectnn_root):
    path = scanobjectnn_root / scanobjectnn_files()["train"]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError, match="not a readable HDF5 file") as err:
        ScanObjectNN(scanobjectnn_root)
    assert "\n" not in str(err.value)


def test_not_h5_at_all(scanobjectnn_root):
    (scanobjectnn_root / scanobjectnn_files()["test"]).write_text("hello")
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        ScanObjectNN(scanobjectnn_root, split="test")


def test_h5_without_data(tmp_path):
    write_h5(tmp_path / scanobjectnn_files()["train"], label=np.zeros(2, np.uint8))
    with pytest.raises(DatasetError, match="has no 'data' dataset .*found keys: label"):
        ScanObjectNN(tmp_path)


def test_h5_without_label(tmp_path):
    write_h5(tmp_path / scanobjectnn_files()["train"], data=np.zeros((2, 16, 3), np.float32))
    with pytest.raises(DatasetError, match="no 'label'"):
        ScanObjectNN(tmp_path, num_points=16)


def test_labels_out_of_range(tmp_path):
    data, _ = random_clouds(3, 16, 15)
    write_h5(tmp_path / scanobjectnn_files()["train"], data=data, label=np.array([0, 15, 3]))
    with pytest.raises(DatasetError, match=r"label 15 of cloud 1 is out of range \[0, 15\)"):
        ScanObjectNN(tmp_path, num_points=16)


@pytest.mark.parametrize(
    ("data", "label", "match"),
    [
        (np.zeros((2, 16), np.float32), np.zeros(2), r"shape \[N, P, 3\]"),
        (np.zeros((2, 16, 3), np.float32), np.zeros(3), r"'label' must have shape \[2\]"),
        (np.zeros((2, 16, 3), np.int32), np.zeros(2), "floating point"),
        (np.full((2, 16, 3), np.nan, np.float32), np.zeros(2), "NaN"),
    ],
)
def test_malformed_arrays(tmp_path, data, label, match):
    write_h5(tmp_path / scanobjectnn_files()["train"], data=data, label=label)
    with pytest.raises(DatasetError, match=match):
        ScanObjectNN(tmp_path, num_points=16)


def test_too_many_points_and_bad_arguments(scanobjectnn_root):
    with pytest.raises(DatasetError, match="more than the 2048"):
        ScanObjectNN(scanobjectnn_root, num_points=4096)
    with pytest.raises(ValueError, match="split"):
        ScanObjectNN(scanobjectnn_root, split="val")
    with pytest.raises(ValueError, match="sampling"):
        ScanObjectNN(scanobjectnn_root, sampling="poisson")


def test_label_column_vector_and_float_labels(tmp_path):
    data, label = random_clouds(4, 16, 15)
    path = write_h5(
        tmp_path / scanobjectnn_files()["train"], data=data, label=label[:, None].astype(np.float64)
    )
    with h5py.File(path) as f:
        assert f["label"].shape == (4, 1)
    assert ScanObjectNN(tmp_path, num_points=16).labels.tolist() == label.tolist()
