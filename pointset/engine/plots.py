"""PNG figures of a run: training curves and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pointset._files import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def save_curves(history: Sequence[dict[str, Any]], path: str) -> None:
    """Plot loss and accuracy per epoch from the run history.

    Each history entry is one epoch's record with ``epoch``, ``train_loss``, ``train_acc``
    and, on evaluated epochs, ``<split>_loss`` and ``<split>_oa`` / ``<split>_macc`` or
    ``<split>_miou`` for the evaluated split (``test``, or ``val`` with a validation split;
    accuracies in [0, 1]).
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    split = "val" if any("val_loss" in h for h in history) else "test"
    for key, label, ax in (
        ("train_loss", "train", ax_loss),
        (f"{split}_loss", split, ax_loss),
        ("train_acc", "train acc", ax_acc),
        (f"{split}_oa", f"{split} OA", ax_acc),
        (f"{split}_macc", f"{split} mAcc", ax_acc),
        (f"{split}_miou", f"{split} mIoU", ax_acc),
    ):
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            scale = 100.0 if ax is ax_acc else 1.0
            ax.plot(x, [v * scale for v in y], marker="." if len(x) < 60 else None, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    _save(fig, path)


def save_confusion_matrix(
    cm: Any, path: str, class_names: Sequence[str] | None = None, title: str = ""
) -> None:
    """Plot a ``[C, C]`` confusion matrix (rows: true class) normalised per row."""
    plt = _pyplot()
    counts = np.asarray(cm, dtype=np.float64)
    n = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = min(4 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    color = "white" if frac[t, p] > 0.5 else "black"
                    ax.text(
                        p, t, int(counts[t, p]), ha="center", va="center", fontsize=7, color=color
                    )
    _save(fig, path)


def label_colors(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` float RGB in ``[0, 1]``: distinct colours per class (tab10 up to
    10 classes, tab20 up to 20, then evenly spaced hues)."""
    plt = _pyplot()
    for name, size in (("tab10", 10), ("tab20", 20)):
        if num_classes <= size:
            return np.asarray(plt.get_cmap(name).colors[:num_classes], dtype=np.float64)
    import colorsys

    return np.array([colorsys.hsv_to_rgb(i / num_classes, 0.75, 0.9) for i in range(num_classes)])


def colorize_labels(labels: Any, num_classes: int) -> np.ndarray:
    """``labels [...]`` int -> ``[..., 3]`` float RGB; ``-1`` (ignored / unknown) is black."""
    lab = np.asarray(labels, dtype=np.int64)
    table = np.concatenate([label_colors(num_classes), np.zeros((1, 3))], 0)
    return table[np.where(lab < 0, num_classes, lab)]


def save_segmentation(
    pos: Any,
    pred: Any,
    target: Any,
    path: str,
    class_names: Sequence[str],
    titles: Sequence[str] = (),
) -> None:
    """Predictions next to ground truth for a few clouds, one row per cloud.

    Each row shows the cloud seen from its own viewpoint (``x`` right, ``y`` down, as in a
    camera frame; a cloud entirely in front of the camera, ``z > 0``, is drawn in
    perspective ``(x / z, y / z)`` so an RGBD cloud looks like its image, others
    orthographically), coloured by the ground truth on the left and by the prediction on
    the right, wrong points ringed in the prediction.

    Args:
        pos: ``[R, N, 3]`` positions (``[N, 3]`` for one cloud).
        pred: ``[R, N]`` predicted classes.
        target: ``[R, N]`` true classes (``-1`` = ignored, drawn black).
        path: PNG to write.
        class_names: names in label order (the legend).
        titles: optional row titles.
    """
    plt = _pyplot()
    pos, pred, target = (np.asarray(a) for a in (pos, pred, target))
    if pos.ndim == 2:
        pos, pred, target = pos[None], pred[None], target[None]
    rows, k = pos.shape[0], len(class_names)
    fig, axes = plt.subplots(rows, 2, figsize=(8, 3.2 * rows), squeeze=False)
    for r in range(rows):
        z = pos[r, :, 2] if (pos[r, :, 2] > 1e-6).all() else np.ones(pos.shape[1])
        x, y = pos[r, :, 0] / z, -pos[r, :, 1] / z
        wrong = (pred[r] != target[r]) & (target[r] >= 0)
        acc = 1.0 - wrong.sum() / max((target[r] >= 0).sum(), 1)
        for c, (labels, name) in enumerate(((target[r], "ground truth"), (pred[r], "prediction"))):
            ax = axes[r, c]
            ax.scatter(x, y, c=colorize_labels(labels, k), s=3, linewidths=0)
            if c == 1 and wrong.any():
                ax.scatter(x[wrong], y[wrong], s=6, facecolors="none", edgecolors="k", lw=0.3)
            head = f"{titles[r]}: " if r < len(titles) else ""
            extra = f" ({100 * acc:.1f}% correct)" if c == 1 else ""
            ax.set_title(f"{head}{name}{extra}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=col, label=n)
        for n, col in zip(class_names, label_colors(k))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 8), fontsize=8)
    fig.subplots_adjust(bottom=0.12 / rows + 0.02)
    _save(fig, path)


def save_label_image(
    labels: Any, path: str, class_names: Sequence[str], color: Any = None, title: str = ""
) -> None:
    """A predicted label image ``[H, W]`` (``-1`` = no prediction, black), with the colour
    image ``[H, W, 3]`` (uint8) beside it when given, and a legend of the classes present."""
    plt = _pyplot()
    lab = np.asarray(labels)
    k = len(class_names)
    panels = 2 if color is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2), squeeze=False)
    if color is not None:
        axes[0, 0].imshow(np.asarray(color))
        axes[0, 0].set_title("colour", fontsize=9)
    axes[0, -1].imshow(colorize_labels(lab, k), interpolation="nearest")
    axes[0, -1].set_title(title or "prediction", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    present = [c for c in range(k) if (lab == c).any()]
    handles = [
        plt.Line2D([], [], marker="s", ls="", color=label_colors(k)[c], label=class_names[c])
        for c in present
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8)
        fig.subplots_adjust(bottom=0.14)
    _save(fig, path)
