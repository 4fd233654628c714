"""Digits as images and image point sets (oracle: sklearn's load_digits arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402

from pointset.datasets import DigitsPoints  # noqa: E402
from pointset.datasets.digits import stratified_split  # noqa: E402


def test_native_size_equals_sklearn_images():
    ds = DigitsPoints("test", image_size=8)
    digits = load_digits()
    ref = torch.from_numpy(digits.images[ds.indices.numpy()] / 16.0).float()
    assert torch.allclose(ds.images[:, 0], ref) and torch.equal(ds.images[:, 0], ds.images[:, 2])
    assert ds.labels.tolist() == digits.target[ds.indices.numpy()].tolist()


def test_split_is_stratified_disjoint_and_seeded():
    train, test = DigitsPoints("train"), DigitsPoints("test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    assert torch.equal(DigitsPoints("test").indices, test.indices)
    assert not torch.equal(DigitsPoints("test", seed=1).indices, test.indices)


def test_upsampled_images_and_point_set_items():
    ds = DigitsPoints("train", image_size=32)
    assert ds.images.shape == (1438, 3, 32, 32)
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    item = ds[0]
    assert item.x.shape == (1024, 3) and item.pos.shape == (1024, 2)
    assert item.is_grid and item.y.tolist() == [int(ds.labels[0])]


def test_stratified_split_counts():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[test]).tolist() == [2, 4, 1]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(35))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        DigitsPoints("val")
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsPoints(test_fraction=1.0)
