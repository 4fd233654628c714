"""PNG figures of a run: training curves and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pointset.data.io import atomic_path


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
    and, on evaluated epochs, ``<split>_loss``, ``<split>_oa``, ``<split>_macc`` for the
    evaluated split (``test``, or ``val`` with a validation split; accuracies in [0, 1]).
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    split = "val" if any("val_oa" in h for h in history) else "test"
    for key, label, ax in (
        ("train_loss", "train", ax_loss),
        (f"{split}_loss", split, ax_loss),
        ("train_acc", "train acc", ax_acc),
        (f"{split}_oa", f"{split} OA", ax_acc),
        (f"{split}_macc", f"{split} mAcc", ax_acc),
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
