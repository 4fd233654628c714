"""kMaX-DeepLab's training losses, for semantic segmentation of point sets.

kMaX ("k-means Mask Transformer", ECCV 2022) trains its clusters with a bipartite matching
of clusters to ground-truth segments and a set of losses on the matched pairs. On the
point-set segmenter (:mod:`pointset.models.kmax_seg`) the segments are **one per semantic
class present in a cloud** (the built-in data is semantic, not panoptic). What is kept:

==========================  ===========  ==================================================
loss                        weight       notes
==========================  ===========  ==================================================
Hungarian matching          --           per cloud, on ``-(dice similarity x class prob.)``
                                         (the PQ-style similarity), with
                                         ``scipy.optimize.linear_sum_assignment``
class cross-entropy         3.0          matched clusters -> their segment's class,
                                         weighted by the matched (detached) dice similarity
                                         and alpha = 0.75; unmatched -> void with weight
                                         ``(1 - alpha) * 1e-5`` (kMaX's no-object weight)
mask dice                   3.0          on the softmax-over-clusters masks, per matched
                                         pair; not weighted by the class probability (MaX's
                                         PQ-style weighting is dropped: it slows the
                                         start of training on small CPU runs)
per-point softmax over      0.3          cross-entropy of every labelled point against the
clusters                                 cluster matched to its segment
auxiliary semantic CE       1.0          per-point semantic head on the backbone features
deep supervision            same         class / dice / cluster-softmax losses on every
                                         decoder layer's prediction, reusing the final
                                         matching
==========================  ===========  ==================================================

Dropped: the pixel-wise instance discrimination loss (Gumbel-top-k sampled pixels,
temperature 0.3). With one segment per class it rewards the same grouping as the per-point
cluster softmax, and it needs its own sampling; it is left out. Ignored points (label -1)
take part in no loss, as kMaX's void pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "KMaXLoss",
    "Match",
    "dice_loss",
    "dice_similarity",
    "hungarian_match",
    "semantic_segments",
]


def semantic_segments(labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """One ground-truth segment per class present in ``labels [N]`` (-1 = ignore).

    Returns ``classes [S]`` (ascending) and ``masks [S, N]`` (float 0/1).
    """
    valid = labels >= 0
    if bool((labels[valid] >= num_classes).any()):
        raise ValueError(f"labels must be in [-1, {num_classes - 1}], got max {int(labels.max())}")
    classes = torch.unique(labels[valid])
    masks = (labels.unsqueeze(0) == classes.unsqueeze(1)).to(torch.float32)
    return classes, masks


def dice_similarity(prob: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft dice between every predicted mask and every target mask.

    ``prob [L, N]`` (probabilities), ``target [S, N]`` (0/1) -> ``[L, S]``
    with ``(2 <p, t> + eps) / (sum p + sum t + eps)``; points outside both masks do not count.
    """
    inter = prob @ target.t()
    return (2.0 * inter + eps) / (prob.sum(1, keepdim=True) + target.sum(1).unsqueeze(0) + eps)


def dice_loss(prob: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Per matched pair: ``1 - dice(prob_s, target_s)``; ``prob, target [S, N]`` -> ``[S]``."""
    inter = (prob * target).sum(1)
    return 1.0 - (2.0 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of rows (clusters) to columns (segments) of ``cost [L, S]``.

    Returns ``(rows [M], cols [M])`` long, ``M = min(L, S)``, sorted by column; solved by
    ``scipy.optimize.linear_sum_assignment`` on the CPU.
    """
    c = cost.detach().to("cpu", torch.float64).numpy()
    rows, cols = linear_sum_assignment(c)
    order = np.argsort(cols)
    device = cost.device
    return (
        torch.as_tensor(rows[order], dtype=torch.long, device=device),
        torch.as_tensor(cols[order], dtype=torch.long, device=device),
    )


class Match(NamedTuple):
    """The matching of one cloud: clusters ``rows [M]`` matched to segments ``cols [M]``,
    segment classes ``classes [S]`` and masks ``masks [S, N]``."""

    rows: Tensor
    cols: Tensor
    classes: Tensor
    masks: Tensor


@dataclass
class KMaXLoss:
    """kMaX's losses for semantic segments (see the module docstring for what is kept).

    Args:
        num_classes (int): semantic classes ``K``; the class head has ``K + 1`` outputs
            (the last is void).
        class_weight, dice_weight, mask_weight, semantic_weight (float): loss weights
            (kMaX COCO: 3.0, 3.0, 0.3, 1.0).
        alpha (float): focal alpha of the class loss for non-void targets (0.75).
        no_object_weight (float): weight of the void target of unmatched clusters (1e-5).

    Call with the segmenter's output dict and ``labels [B, N]`` (-1 = ignore); returns
    ``(loss, parts)`` with the parts as floats.
    """

    num_classes: int
    class_weight: float = 3.0
    dice_weight: float = 3.0
    mask_weight: float = 0.3
    semantic_weight: float = 1.0
    alpha: float = 0.75
    no_object_weight: float = 1e-5

    def match(self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor) -> Match:
        """Match the clusters of one cloud: ``class_logits [L, K+1]``, ``mask_logits [N, L]``,
        ``labels [N]``."""
        classes, masks = semantic_segments(labels, self.num_classes)
        valid = (labels >= 0).to(mask_logits.dtype)
        with torch.no_grad():
            prob = mask_logits.softmax(dim=1).t() * valid  # [L, N]
            class_prob = class_logits.softmax(dim=1)[:, classes]  # [L, S]
            cost = -(dice_similarity(prob, masks.to(prob.dtype)) * class_prob)
        rows, cols = hungarian_match(cost)
        return Match(rows, cols, classes, masks.to(mask_logits.dtype))

    def prediction_terms(
        self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, match: Match
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class, dice and cluster-softmax losses of one cloud's prediction under ``match``.

        ``class_logits [L, K+1]``, ``mask_logits [N, L]``, ``labels [N]``.
        """
        num_clusters = class_logits.size(0)
        valid = labels >= 0
        prob = mask_logits.softmax(dim=1).t() * valid.to(mask_logits.dtype)  # [L, N]
        target = torch.full(
            (num_clusters,), self.num_classes, dtype=torch.long, device=labels.device
        )
        target[match.rows] = match.classes[match.cols]
        weight = torch.full(
            (num_clusters,),
            (1.0 - self.alpha) * self.no_object_weight,
            dtype=prob.dtype,
            device=prob.device,
        )
        matched_prob, matched_mask = prob[match.rows], match.masks[match.cols]
        with torch.no_grad():
            similarity = 1.0 - dice_loss(matched_prob, matched_mask)
        weight[match.rows] = self.alpha * similarity
        ce = F.cross_entropy(class_logits, target, reduction="none")
        count = max(int(match.rows.numel()), 1)
        class_loss = (weight * ce).sum() / count
        dice = dice_loss(matched_prob, matched_mask).sum() / count
        # every labelled point -> the cluster matched to its class's segment
        cluster_of_class = torch.full(
            (self.num_classes,), -1, dtype=torch.long, device=labels.device
        )
        cluster_of_class[match.classes[match.cols]] = match.rows
        point_target = torch.where(valid, cluster_of_class[labels.clamp_min(0)], -1)
        if bool((point_target >= 0).any()):
            mask_loss = F.cross_entropy(mask_logits, point_target, ignore_index=-1)
        else:
            mask_loss = mask_logits.sum() * 0.0
        return class_loss, dice, mask_loss

    def __call__(self, output: dict, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss of a :class:`~pointset.models.kmax_seg.KMaXSeg` output; see the class."""
        if labels.dim() != 2 or labels.shape != output["mask_logits"].shape[:2]:
            raise ValueError(
                f"labels must be [B, N] = {tuple(output['mask_logits'].shape[:2])}, got {tuple(labels.shape)}"
            )
        labels = labels.long()
        batch = labels.size(0)
        sums = {"class": 0.0, "dice": 0.0, "mask": 0.0}
        total = output["mask_logits"].new_zeros(())
        predictions = [(output["class_logits"], output["mask_logits"], None)]
        predictions += [
            (a["class_logits"], a["mask_logits"], a["index"]) for a in output.get("aux", [])
        ]
        for b in range(batch):
            match = self.match(output["class_logits"][b], output["mask_logits"][b], labels[b])
            for class_logits, mask_logits, index in predictions:
                lab, m = labels[b], match
                if index is not None:  # a coarser level: its points' labels and masks
                    lab = labels[b][index[b]]
                    m = match._replace(masks=match.masks[:, index[b]])
                c, d, k = self.prediction_terms(class_logits[b], mask_logits[b], lab, m)
                total = (
                    total
                    + (self.class_weight * c + self.dice_weight * d + self.mask_weight * k) / batch
                )
                sums["class"] += float(c.detach()) / batch
                sums["dice"] += float(d.detach()) / batch
                sums["mask"] += float(k.detach()) / batch
        parts = dict(sums)
        if "semantic_logits" in output:
            sem = output["semantic_logits"]
            if bool((labels >= 0).any()):
                semantic = F.cross_entropy(
                    sem.reshape(-1, sem.size(-1)), labels.reshape(-1), ignore_index=-1
                )
            else:  # nothing labelled: no semantic term (cross-entropy would be 0 / 0)
                semantic = sem.sum() * 0.0
            total = total + self.semantic_weight * semantic
            parts["semantic"] = float(semantic.detach())
        parts["total"] = float(total.detach())
        return total, parts
