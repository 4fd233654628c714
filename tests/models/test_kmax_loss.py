"""Tests for pointset/models/kmax_loss.py.

Oracles: brute force over all permutations (Hungarian matching), hand-computed values
(dice, segments, the loss of a hand-made prediction), and the loss's own definitions
recomputed term by term.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pointset.models.kmax_loss import (
    KMaXLoss,
    dice_loss,
    dice_similarity,
    hungarian_match,
    semantic_segments,
)


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (6, 2), (4, 4), (7, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_matches_brute_force(shape, seed):
    """Oracle: the minimum total cost over every injective map of segments to clusters."""
    rows, cols = shape
    cost = torch.rand(
        rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    r, c = hungarian_match(cost)
    assert c.tolist() == list(range(cols))  # every segment matched, sorted by segment
    assert len(set(r.tolist())) == cols
    best = min(
        sum(float(cost[p[j], j]) for j in range(cols))
        for p in itertools.permutations(range(rows), cols)
    )
    assert float(cost[r, c].sum()) == pytest.approx(best, abs=1e-12)


def test_dice_hand_computed():
    """Oracle: hand-computed soft dice, (2 <p, t> + 1) / (sum p + sum t + 1)."""
    prob = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.5, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # pair (0, 0): inter 1.5 -> (3 + 1) / (1.5 + 2 + 1) = 4 / 4.5
    # pair (1, 1): inter 1.0 -> (2 + 1) / (2.5 + 1 + 1) = 3 / 4.5
    torch.testing.assert_close(dice_loss(prob, target), torch.tensor([1 - 4 / 4.5, 1 - 3 / 4.5]))
    # cross pairs: (0, 1) inter 0 -> 1 / (1.5 + 1 + 1); (1, 0) inter 0.5 -> 2 / (2.5 + 2 + 1)
    sim = dice_similarity(prob, target)
    torch.testing.assert_close(sim, torch.tensor([[4 / 4.5, 1 / 3.5], [2 / 5.5, 3 / 4.5]]))


def test_semantic_segments_one_per_present_class():
    """Oracle: hand-written masks; ignored points (-1) belong to no segment."""
    classes, masks = semantic_segments(torch.tensor([2, -1, 0, 2, 0]), num_classes=4)
    assert classes.tolist() == [0, 2]
    assert masks.tolist() == [[0, 0, 1, 0, 1], [1, 0, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        semantic_segments(torch.tensor([0, 4]), num_classes=4)


def test_loss_terms_hand_computed():
    """Oracle: a hand-made prediction whose matching is obvious; every term recomputed from
    its definition (class CE weighted by alpha x dice, void weight (1 - alpha) 1e-5, dice,
    per-point CE against the matched cluster, auxiliary CE)."""
    loss = KMaXLoss(num_classes=2)
    labels = torch.tensor([[0, 0, 1, -1]])
    mask_logits = torch.tensor(
        [[[4.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]]]
    )
    class_logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0]]])
    sem = torch.randn(1, 4, 2)
    total, parts = loss(
        {"class_logits": class_logits, "mask_logits": mask_logits, "semantic_logits": sem}, labels
    )

    prob = mask_logits[0].softmax(1).t() * torch.tensor([1.0, 1.0, 1.0, 0.0])
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    dl = dice_loss(prob[:2], masks)  # clusters 0, 1 matched to classes 0, 1
    ce = F.cross_entropy(class_logits[0], torch.tensor([0, 1, 2]), reduction="none")
    weight = torch.tensor([0.75 * (1 - dl[0]), 0.75 * (1 - dl[1]), 0.25 * 1e-5])
    class_loss = (weight * ce).sum() / 2
    mask_loss = F.cross_entropy(mask_logits[0, :3], torch.tensor([0, 0, 1]))
    semantic = F.cross_entropy(sem[0], labels[0], ignore_index=-1)
    expected = 3.0 * class_loss + 3.0 * dl.sum() / 2 + 0.3 * mask_loss + semantic
    assert parts["class"] == pytest.approx(float(class_loss), rel=1e-6)
    assert parts["dice"] == pytest.approx(float(dl.sum() / 2), rel=1e-6)
    assert parts["mask"] == pytest.approx(float(mask_loss), rel=1e-6)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert math.isfinite(parts["total"])


def test_deep_supervision_reuses_the_final_matching_on_level_points():
    """Oracle: an aux prediction equal to the final one, on the level points given by
    ``index``, adds exactly the final terms recomputed on those points and labels."""
    loss = KMaXLoss(num_classes=3)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[0, 2, 2, 1, 0, -1]])
    out = {
        "class_logits": torch.randn(1, 4, 4, generator=g),
        "mask_logits": torch.randn(1, 6, 4, generator=g),
    }
    base, _ = loss(out, labels)
    index = torch.tensor([[0, 1, 3]])
    aux = {
        "class_logits": out["class_logits"],
        "mask_logits": out["mask_logits"][:, index[0]],
        "index": index,
    }
    both, _ = loss({**out, "aux": [aux]}, labels)
    match = loss.match(out["class_logits"][0], out["mask_logits"][0], labels[0])
    sub = match._replace(masks=match.masks[:, index[0]])
    c, d, k = loss.prediction_terms(
        out["class_logits"][0], out["mask_logits"][0, index[0]], labels[0, index[0]], sub
    )
    assert float(both - base) == pytest.approx(float(3 * c + 3 * d + 0.3 * k), rel=1e-6)


def test_bad_labels_raise():
    """Oracle: the input contract (labels must be [B, N] matching the masks)."""
    out = {"class_logits": torch.randn(1, 2, 3), "mask_logits": torch.randn(1, 4, 2)}
    with pytest.raises(ValueError, match="labels must be"):
        KMaXLoss(2)(out, torch.zeros(1, 5, dtype=torch.long))
