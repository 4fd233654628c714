"""Classification metrics from a confusion matrix (overall and mean class accuracy) and the
ShapeNetPart part-segmentation metrics (instance and class mIoU).

For classification the confusion matrix is the one quantity that is summed across batches
and processes; every metric is computed from it, so distributed evaluation reduces one
tensor. For ShapeNetPart that quantity is the per-category (IoU sum, shape count) table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pointset.datasets.shapenetpart import PARTS_PER_CATEGORY as SHAPENET_PARTS


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``cm[t, p]`` of samples with true class ``t`` predicted as ``p``.

    Args:
        pred: predicted classes ``[B]`` (int), each in ``[0, num_classes)``.
        target: true classes ``[B]`` (int), each in ``[0, num_classes)``.
        num_classes: number of classes ``C``.

    Returns:
        ``[C, C]`` int64 counts, rows = true class, columns = prediction.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(
            f"pred and target must be matching 1-d tensors, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    for name, labels in (("target", target), ("pred", pred)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got range "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
    flat = target.long() * num_classes + pred.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def overall_accuracy(cm: Tensor) -> float:
    """Fraction of correct predictions (OA): ``trace(cm) / sum(cm)``; 0 for an empty matrix."""
    total = int(cm.sum())
    return float(cm.diagonal().sum()) / total if total else 0.0


def class_accuracies(cm: Tensor) -> Tensor:
    """Per-class recall ``[C]`` (float64); NaN for classes without samples."""
    support = cm.sum(dim=1).double()
    return cm.diagonal().double() / support


def mean_class_accuracy(cm: Tensor) -> float:
    """Mean of the per-class recalls (mAcc) over the classes that have samples.

    Equals scikit-learn's ``balanced_accuracy_score``; 0 for an empty matrix.
    """
    acc = class_accuracies(cm)
    acc = acc[~torch.isnan(acc)]
    return float(acc.mean()) if acc.numel() else 0.0


# -- segmentation ------------------------------------------------------------------------


def segmentation_confusion(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-point confusion matrix of a segmentation, skipping ignored points.

    Args:
        pred: predicted classes, any shape (e.g. ``[B, N]``), int.
        target: true classes of the same shape; ``-1`` marks points to ignore, the others
            lie in ``[0, num_classes)``.
        num_classes: number of classes ``C``.

    Returns:
        ``[C, C]`` int64 counts over the non-ignored points (rows = true class).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    keep = target.reshape(-1) != -1
    return confusion_matrix(pred.reshape(-1)[keep], target.reshape(-1)[keep], num_classes)


def class_ious(cm: Tensor) -> Tensor:
    r"""Per-class intersection over union ``[C]`` (float64) from a confusion matrix:

    .. math:: \mathrm{IoU}_c = \frac{cm_{cc}}{\sum_p cm_{cp} + \sum_t cm_{tc} - cm_{cc}}

    NaN for a class that is neither present nor predicted.
    """
    tp = cm.diagonal().double()
    union = cm.sum(0).double() + cm.sum(1).double() - tp
    return tp / union


def mean_iou(cm: Tensor) -> float:
    """Mean of the per-class IoUs (mIoU) over the classes present or predicted; 0 when
    there are none."""
    iou = class_ious(cm)
    iou = iou[~torch.isnan(iou)]
    return float(iou.mean()) if iou.numel() else 0.0


# -- ShapeNetPart part segmentation --------------------------------------------------------
#
# The standard evaluation (PointNet / PointNet++ / PointMLP papers): the logits are masked
# to the parts of the shape's object category before the argmax; a shape's IoU is the mean,
# over its category's parts, of the part IoU, where a part absent from both the prediction
# and the ground truth counts as 1; instance mIoU is the mean over shapes and class mIoU the
# mean over categories of their shapes' mean. Per-category (sum, count) totals are what is
# summed across batches and processes.


def _part_table(parts_per_category: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    counts = torch.as_tensor(list(parts_per_category), dtype=torch.long, device=device)
    if counts.dim() != 1 or counts.numel() == 0 or bool((counts < 1).any()):
        raise ValueError(f"parts_per_category must be positive counts, got {parts_per_category}")
    return torch.cumsum(counts, 0) - counts, counts


def _check_category(category: Tensor, batch: int, num_categories: int) -> Tensor:
    if category.dim() != 1 or category.numel() != batch or category.is_floating_point():
        raise ValueError(
            f"category must be [{batch}] integer ids, got {tuple(category.shape)} {category.dtype}"
        )
    if batch and (int(category.min()) < 0 or int(category.max()) >= num_categories):
        bad = category[(category < 0) | (category >= num_categories)][0]
        raise ValueError(f"category id {int(bad)} is outside [0, {num_categories - 1}]")
    return category.long()


def shapenet_part_predict(
    logits: Tensor, category: Tensor, parts_per_category: Sequence[int] = SHAPENET_PARTS
) -> Tensor:
    """Predicted global part ids ``[B, N]``: argmax of ``logits [B, N, P]`` over the parts of
    each shape's ``category [B]`` only (log-probabilities work the same)."""
    offsets, counts = _part_table(parts_per_category, logits.device)
    if logits.dim() != 3 or logits.size(-1) != int(counts.sum()):
        raise ValueError(f"logits must be [B, N, {int(counts.sum())}], got {tuple(logits.shape)}")
    category = _check_category(category, logits.size(0), counts.numel())
    part = torch.arange(logits.size(-1), device=logits.device)
    start = offsets[category].unsqueeze(1)  # [B, 1]
    own = (part >= start) & (part < start + counts[category].unsqueeze(1))  # [B, P]
    return logits.masked_fill(~own.unsqueeze(1), float("-inf")).argmax(dim=-1)


def shapenet_part_ious(
    pred: Tensor,
    target: Tensor,
    category: Tensor,
    parts_per_category: Sequence[int] = SHAPENET_PARTS,
) -> Tensor:
    """Per-shape part mIoU ``[B]`` (float64) of global part ids ``pred`` and ``target``
    ``[B, N]``: the mean over the parts of ``category [B]`` of
    ``|pred == p and target == p| / |pred == p or target == p|``, a part absent from both
    counting 1.

    Example:
        >>> pred = torch.tensor([[0, 0, 1, 1]])
        >>> target = torch.tensor([[0, 1, 1, 1]])
        >>> shapenet_part_ious(pred, target, torch.tensor([0]))  # airplane: parts 0-3
        tensor([0.7917], dtype=torch.float64)
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must both be [B, N], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    offsets, counts = _part_table(parts_per_category, pred.device)
    category = _check_category(category, pred.size(0), counts.numel())
    local = torch.arange(int(counts.max()), device=pred.device)  # [J]
    part = offsets[category].view(-1, 1, 1) + local  # [B, 1, J]
    is_pred = pred.unsqueeze(-1) == part  # [B, N, J]
    is_true = target.unsqueeze(-1) == part
    inter = (is_pred & is_true).sum(1).double()  # [B, J]
    union = (is_pred | is_true).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    valid = local < counts[category].unsqueeze(1)  # [B, J]
    return (iou * valid).sum(1) / valid.sum(1)


def pointmlp_shape_ious(pred: Tensor, target: Tensor, num_parts: int = 50) -> Tensor:
    """Per-shape IoU ``[B]`` (float64) as the official PointMLP part-segmentation script
    computes it: the mean over the parts **present in** ``target [B, N]`` of their IoU with
    ``pred [B, N]`` (an unmasked argmax over all ``num_parts`` parts there); parts only
    predicted are ignored. Not the standard metric (see :func:`shapenet_part_ious`).

    Example:
        >>> pointmlp_shape_ious(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
        tensor([0.5833], dtype=torch.float64)
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must both be [B, N], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    part = torch.arange(num_parts, device=pred.device)
    is_pred = pred.unsqueeze(-1) == part  # [B, N, P]
    is_true = target.unsqueeze(-1) == part
    inter = (is_pred & is_true).sum(1).double()
    union = (is_pred | is_true).sum(1).double()
    present = is_true.any(1)
    iou = torch.where(present, inter / union.clamp(min=1), torch.zeros_like(union))
    return iou.sum(1) / present.sum(1).clamp(min=1)


def shapenet_part_totals(
    shape_ious: Tensor, category: Tensor, num_categories: int = len(SHAPENET_PARTS)
) -> Tensor:
    """``[num_categories, 2]`` float64 (sum of shape IoUs, number of shapes) per category;
    add these over batches and processes, then read :func:`instance_miou` /
    :func:`class_miou`."""
    category = _check_category(category, shape_ious.numel(), num_categories)
    totals = torch.zeros(num_categories, 2, dtype=torch.float64, device=shape_ious.device)
    totals[:, 0].index_add_(0, category, shape_ious.double().reshape(-1))
    totals[:, 1].index_add_(0, category, torch.ones_like(shape_ious, dtype=torch.float64))
    return totals


def category_mious(totals: Tensor) -> Tensor:
    """Mean shape IoU ``[C]`` of every category (NaN for categories without shapes)."""
    return totals[:, 0] / totals[:, 1]


def instance_miou(totals: Tensor) -> float:
    """Mean IoU over all shapes (ShapeNetPart "instance mIoU"); 0 without shapes."""
    count = float(totals[:, 1].sum())
    return float(totals[:, 0].sum()) / count if count else 0.0


def class_miou(totals: Tensor) -> float:
    """Mean over the categories that have shapes of their mean shape IoU ("class mIoU");
    0 without shapes."""
    per = category_mious(totals)
    per = per[~torch.isnan(per)]
    return float(per.mean()) if per.numel() else 0.0
