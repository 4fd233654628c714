"""ModelNet40 loader on tiny shards in the release layout (oracle: the arrays written)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_files import random_clouds, write_h5, write_modelnet40

from pointset.datasets import DatasetError, ModelNet40
from pointset.datasets.modelnet40 import CLASS_NAMES


def test_shards_concatenate_in_name_order(tmp_path):
    write_modelnet40(tmp_path / "modelnet40_ply_hdf5_2048", shards=2, n=4, points=64)
    ds = ModelNet40(tmp_path, "train", num_points=32)  # the parent folder works too
    first, label0 = random_clouds(4, 64, 40, seed=0)
    second, _ = random_clouds(4, 64, 40, seed=10)
    assert torch.equal(ds.points, torch.from_numpy(np.concatenate([first, second])[:, :32]))
    assert ds.labels.tolist() == list(label0) + list(label0 + 7)
    assert ds.class_names == CLASS_NAMES and ds.num_classes == 40
    item = ds[5]
    assert item.pos.shape == (32, 3) and item.y.tolist() == [ds.labels[5].item()]


def test_fps_sampling(tmp_path):
    folder = write_modelnet40(tmp_path, shards=1, n=2, points=64)
    ds = ModelNet40(folder, "test", num_points=16, sampling="fps")
    assert ds.points.shape == (2, 16, 3)


def test_missing_files_name_the_command(tmp_path):
    with pytest.raises(DatasetError, match="pointset download modelnet40 --root"):
        ModelNet40(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no train files .*ply_data_train0.h5"):
        ModelNet40(tmp_path)


def test_bad_shard(tmp_path):
    write_h5(
        tmp_path / "ply_data_train0.h5", data=np.zeros((2, 8, 3), np.float32), label=[[0], [40]]
    )
    with pytest.raises(DatasetError, match=r"label 40 of cloud 1 is out of range \[0, 40\)"):
        ModelNet40(tmp_path, num_points=8)


def test_shape_names_must_list_forty(tmp_path):
    write_modelnet40(tmp_path, shards=1, n=2, points=8)
    (tmp_path / "shape_names.txt").write_text("airplane\nbathtub\n")
    with pytest.raises(DatasetError, match="lists 2 class names, expected 40"):
        ModelNet40(tmp_path, num_points=8)
