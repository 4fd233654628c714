"""Segmentation metrics against hand-computed values, and the segmentation pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pointset.engine.metrics import class_ious, mean_iou, overall_accuracy, segmentation_confusion
from pointset.engine.plots import colorize_labels, save_label_image, save_segmentation


def test_confusion_skips_ignored_points():
    pred = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    target = torch.tensor([[0, 1, -1, 2], [2, 1, 0, -1]])
    cm = segmentation_confusion(pred, target, 3)
    # kept pairs (t, p): (0,0) (1,1) (2,2) (2,2) (1,2) (0,0)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]


def test_iou_miou_oa_by_hand():
    cm = torch.tensor([[2, 0, 0], [0, 1, 1], [0, 0, 2]])
    # IoU_0 = 2 / (2 + 2 - 2) = 1; IoU_1 = 1 / (2 + 1 - 1) = 1/2; IoU_2 = 2 / (2 + 3 - 2) = 2/3
    assert class_ious(cm).tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert mean_iou(cm) == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert overall_accuracy(cm) == pytest.approx(5 / 6)


def test_absent_class_is_left_out_of_the_mean():
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])  # class 2 neither present nor predicted
    iou = class_ious(cm)
    assert iou[0] == pytest.approx(0.75) and iou[1] == 0.0 and math.isnan(iou[2])
    assert mean_iou(cm) == pytest.approx(0.375)
    assert mean_iou(torch.zeros(2, 2, dtype=torch.long)) == 0.0


def test_labels_out_of_range_and_shape_mismatch():
    with pytest.raises(ValueError, match="target labels"):
        segmentation_confusion(torch.tensor([0]), torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="same shape"):
        segmentation_confusion(torch.zeros(2, 3), torch.zeros(2, 4), 3)


def test_pictures_are_written(tmp_path):
    """The PNGs exist and are images; ignored labels are drawn black."""
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 50, 3, generator=g) + torch.tensor([0.0, 0.0, 1.0])
    target = torch.randint(-1, 4, (2, 50), generator=g)
    pred = torch.randint(0, 4, (2, 50), generator=g)
    save_segmentation(pos, pred, target, str(tmp_path / "p.png"), ["a", "b", "c", "d"], ["x", "y"])
    assert Image.open(tmp_path / "p.png").size[0] > 100
    labels = np.array([[0, 1], [-1, 3]])
    colors = colorize_labels(labels, 4)
    assert colors.shape == (2, 2, 3) and (colors[1, 0] == 0).all() and not (colors[0, 0] == 0).all()
    save_label_image(
        labels, str(tmp_path / "l.png"), ["a", "b", "c", "d"], np.zeros((2, 2, 3), np.uint8)
    )
    assert Image.open(tmp_path / "l.png").size[0] > 100
