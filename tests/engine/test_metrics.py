"""pointset.engine.metrics against hand-computed values (sklearn's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from pointset.engine.metrics import (
    class_accuracies,
    confusion_matrix,
    mean_class_accuracy,
    overall_accuracy,
)


def test_confusion_matrix_counts():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 0, 2, 2, 1])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_accuracies():
    cm = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 2]])
    assert overall_accuracy(cm) == pytest.approx(4 / 6)
    # balanced accuracy: mean recall (1/2 + 1/2 + 1) / 3
    assert mean_class_accuracy(cm) == pytest.approx(2 / 3)


def test_classes_without_samples_are_skipped():
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 2]])
    acc = class_accuracies(cm)
    assert math.isnan(acc[1])
    assert mean_class_accuracy(cm) == pytest.approx((0.75 + 1.0) / 2)


def test_empty():
    cm = torch.zeros(4, 4, dtype=torch.int64)
    assert overall_accuracy(cm) == 0.0 and mean_class_accuracy(cm) == 0.0


def test_label_out_of_range():
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)


def test_prediction_out_of_range():
    """Oracle: hand count. Pred 3 with 3 classes used to land in the next row's column 0
    (``flat = t * C + p``), silently counting a wrong sample as class 1 -> class 0."""
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\), got range \[0, 3\]"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 0]), 3)
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\), got range \[-1, 0\]"):
        confusion_matrix(torch.tensor([-1, 0]), torch.tensor([1, 0]), 3)
