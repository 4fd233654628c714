"""Tests for the ShapeNetPart metrics of pointset/engine/metrics.py against hand-computed
values (and, for random inputs, a per-shape loop written after the standard evaluation)."""

from __future__ import annotations

import math

import pytest
import torch

from pointset.datasets.shapenetpart import category_parts
from pointset.engine.metrics import (
    category_mious,
    class_miou,
    instance_miou,
    pointmlp_shape_ious,
    shapenet_part_ious,
    shapenet_part_predict,
    shapenet_part_totals,
)


def test_masked_argmax_picks_only_the_category_parts():
    """Hand-computed: the best logit lies outside the category; the best inside wins."""
    logits = torch.full((2, 3, 50), -5.0)
    logits[:, :, 20] = 10.0  # a guitar part: never the answer for a bag or a table
    logits[0, 0, 5], logits[0, 1, 4], logits[0, 2, 5] = 1.0, 2.0, 3.0  # bag: parts 4, 5
    logits[1, :, 48] = 0.5  # table: parts 47-49
    pred = shapenet_part_predict(logits, torch.tensor([1, 15]))
    assert pred.tolist() == [[5, 4, 5], [48, 48, 48]]
    unmasked = logits.argmax(-1)
    assert (unmasked == 20).all()


def test_shape_ious_by_hand():
    """Hand-computed part IoUs, absent parts counting 1.

    Shape 0 (bag, parts 4-5): pred [4, 4, 5, 5], true [4, 5, 5, 5]:
      part 4: I=1, U=2 -> 1/2; part 5: I=2, U=3 -> 2/3; mean 7/12.
    Shape 1 (airplane, parts 0-3): pred [0, 0, 1, 1], true [0, 0, 0, 0]:
      part 0: 2/4; part 1: 0/2; parts 2, 3 absent -> 1, 1; mean 5/8.
    Shape 2 (mug, parts 36-37): pred = true = [36, 36, 36, 36]: part 37 absent -> 1; mean 1.
    """
    pred = torch.tensor([[4, 4, 5, 5], [0, 0, 1, 1], [36, 36, 36, 36]])
    true = torch.tensor([[4, 5, 5, 5], [0, 0, 0, 0], [36, 36, 36, 36]])
    ious = shapenet_part_ious(pred, true, torch.tensor([1, 0, 11]))
    torch.testing.assert_close(ious, torch.tensor([7 / 12, 5 / 8, 1.0], dtype=torch.float64))


def test_instance_and_class_miou_by_hand():
    """Hand-computed: 3 airplanes (0.5, 0.7, 0.9) and 1 table (0.2).

    instance mIoU = (0.5 + 0.7 + 0.9 + 0.2) / 4 = 0.575; class mIoU = (0.7 + 0.2) / 2 = 0.45.
    """
    ious = torch.tensor([0.5, 0.7, 0.9, 0.2], dtype=torch.float64)
    totals = shapenet_part_totals(ious, torch.tensor([0, 0, 0, 15]))
    assert totals.shape == (16, 2)
    assert instance_miou(totals) == pytest.approx(0.575)
    assert class_miou(totals) == pytest.approx(0.45)
    per = category_mious(totals)
    assert per[0].item() == pytest.approx(0.7) and per[15].item() == pytest.approx(0.2)
    assert math.isnan(per[3].item())
    split = shapenet_part_totals(ious[:2], torch.tensor([0, 0])) + shapenet_part_totals(
        ious[2:], torch.tensor([0, 15])
    )
    torch.testing.assert_close(split, totals)  # totals add over batches / processes
    empty = torch.zeros(16, 2, dtype=torch.float64)
    assert instance_miou(empty) == 0.0 and class_miou(empty) == 0.0


def _loop_ious(pred, true, category):
    """The standard evaluation written as a plain per-shape, per-part loop."""
    out = []
    for p, t, c in zip(pred.tolist(), true.tolist(), category.tolist()):
        scores = []
        for part in category_parts(c):
            inter = sum(a == part and b == part for a, b in zip(p, t))
            union = sum(a == part or b == part for a, b in zip(p, t))
            scores.append(1.0 if union == 0 else inter / union)
        out.append(sum(scores) / len(scores))
    return torch.tensor(out, dtype=torch.float64)


def test_random_shapes_match_the_loop():
    """Oracle: the per-shape loop above on random masked predictions."""
    g = torch.Generator().manual_seed(0)
    category = torch.randint(0, 16, (12,), generator=g)
    logits = torch.randn(12, 40, 50, generator=g)
    pred = shapenet_part_predict(logits, category)
    start = torch.tensor([category_parts(int(c)).start for c in category])
    count = torch.tensor([len(category_parts(int(c))) for c in category])
    true = start[:, None] + torch.randint(0, 6, (12, 40), generator=g) % count[:, None]
    torch.testing.assert_close(
        shapenet_part_ious(pred, true, category), _loop_ious(pred, true, category)
    )


def test_pointmlp_script_variant_by_hand():
    """Hand-computed, the official script's rule (parts present in the ground truth only).

    Shape 0: pred [4, 4, 5, 20], true [4, 5, 5, 5]: part 4: 1/2, part 5: 1/3 (I=1, U=3);
    part 20 (predicted only) ignored; mean 5/12. Shape 1: pred = true = [0, 0, 0, 0]: 1.
    """
    pred = torch.tensor([[4, 4, 5, 20], [0, 0, 0, 0]])
    true = torch.tensor([[4, 5, 5, 5], [0, 0, 0, 0]])
    torch.testing.assert_close(
        pointmlp_shape_ious(pred, true), torch.tensor([5 / 12, 1.0], dtype=torch.float64)
    )


def test_bad_input_raises_value_error():
    """Oracle: the input contract (ValueError naming the offending value)."""
    with pytest.raises(ValueError, match="category id 16"):
        shapenet_part_ious(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([16]))
    with pytest.raises(ValueError, match=r"logits must be \[B, N, 50\]"):
        shapenet_part_predict(torch.zeros(1, 4, 13), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"pred and target must both be \[B, N\]"):
        shapenet_part_ious(torch.zeros(4), torch.zeros(4), torch.tensor([0]))
