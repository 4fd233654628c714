"""Classification metrics from a confusion matrix: overall and mean class accuracy.

The confusion matrix is the one quantity that is summed across batches and processes;
every metric is computed from it, so distributed evaluation reduces one tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``cm[t, p]`` of samples with true class ``t`` predicted as ``p``.

    Args:
        pred: predicted classes ``[B]`` (int).
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
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target labels must lie in [0, {num_classes}), got range "
            f"[{int(target.min())}, {int(target.max())}]"
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
