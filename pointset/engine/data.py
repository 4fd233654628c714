"""Data for the trainer: whole splits as dense tensors, index batches, batched augmentation.

Point datasets are held as ``points [M, N, 3]`` and batched by indexing, which on CPU is
much faster than collating :class:`~pointset.PointSet` items; image datasets are held as
``images [M, 3, H, W]``. Augmentations act on a whole batch at once (the point ones are the
transforms of :mod:`pointset.data.transforms`, one draw per sample) and draw from an
explicit ``torch.Generator``, so the numbers of an epoch depend only on its seed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from pointset.data import transforms as T

if TYPE_CHECKING:  # loaders take a config; the config lists the loaders
    from .config import DataConfig


@dataclass
class ArraySplit:
    """One dataset split held in memory.

    Attributes:
        inputs: ``[M, N, 3]`` points (``kind="points"``) or ``[M, C, H, W]`` images.
        labels: ``[M]`` int64 classes.
        class_names: names in label order.
        kind: ``"points"`` or ``"image"``.
    """

    inputs: Tensor
    labels: Tensor
    class_names: Sequence[str]
    kind: str

    def __len__(self) -> int:
        return self.labels.numel()

    def batch(self, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Inputs and labels of samples ``index [B]`` on ``device``."""
        return self.inputs[index].to(device), self.labels[index].to(device)

    def subset(self, index: Tensor) -> ArraySplit:
        """The samples ``index [M']`` as a split of their own."""
        return dataclasses.replace(self, inputs=self.inputs[index], labels=self.labels[index])


# -- datasets --------------------------------------------------------------------------


def normalize_image(images: Tensor) -> Tensor:
    """Images in ``[0, 1]`` -> the ``[-1, 1]`` range image models are trained on
    (``[..., 3, H, W]``, any leading shape)."""
    return (images - 0.5) / 0.5


def _points(ds: object) -> ArraySplit:
    return ArraySplit(ds.points, ds.labels, list(ds.class_names), "points")


def _synthetic(cfg: DataConfig, split: str) -> ArraySplit:
    from pointset.datasets import SyntheticShapes

    return _points(SyntheticShapes(cfg.root, split, num_points=cfg.num_points, **cfg.options))


def _scanobjectnn(cfg: DataConfig, split: str) -> ArraySplit:
    from pointset.datasets import ScanObjectNN

    return _points(ScanObjectNN(cfg.root, split=split, num_points=cfg.num_points, **cfg.options))


def _modelnet40(cfg: DataConfig, split: str) -> ArraySplit:
    from pointset.datasets.modelnet40 import ModelNet40

    return _points(ModelNet40(cfg.root, split=split, num_points=cfg.num_points, **cfg.options))


def _digits(cfg: DataConfig, split: str) -> ArraySplit:
    from pointset.datasets.digits import DigitsPoints

    ds = DigitsPoints(split=split, image_size=cfg.image_size, **cfg.options)
    images = normalize_image(ds.images)
    return ArraySplit(images.contiguous(), ds.labels, list(ds.class_names), "image")


def _rgbd_folder(cfg: DataConfig, split: str) -> ArraySplit:
    """Frames of ``root/<split>/frames.json`` (see :class:`~pointset.datasets.RGBDFolder`)."""
    from pointset.datasets.rgbd_folder import RGBDFolder

    ds = RGBDFolder(os.path.join(cfg.root, split), num_points=cfg.num_points, **cfg.options)
    points = (
        torch.stack([ds[i].pos for i in range(len(ds))])
        if len(ds)
        else torch.zeros(0, cfg.num_points, 3)
    )
    return ArraySplit(points, ds.labels, list(ds.class_names), "points")


#: ``data.name`` -> loader of one split.
DATASETS: dict[str, Callable[[DataConfig, str], ArraySplit]] = {
    "synthetic_shapes": _synthetic,
    "scanobjectnn": _scanobjectnn,
    "modelnet40": _modelnet40,
    "digits": _digits,
    "rgbd_folder": _rgbd_folder,
}


def load_split(cfg: DataConfig, split: str) -> ArraySplit:
    """Split ``"train"`` or ``"test"`` of the dataset described by ``cfg``."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; valid: {', '.join(DATASETS)}")
    try:
        return DATASETS[cfg.name](cfg, split)
    except TypeError as exc:  # an option the dataset does not take
        raise ValueError(f"data.options {cfg.options} do not fit {cfg.name}: {exc}") from None


# -- batching --------------------------------------------------------------------------


def epoch_batches(
    n: int,
    batch_size: int,
    drop_last: bool,
    order: torch.Generator | None,
    multiple_of: int = 1,
) -> list[Tensor]:
    """Index batches of one epoch over ``n`` samples.

    Args:
        n: number of samples.
        batch_size: samples per batch.
        drop_last: drop the last incomplete batch; otherwise it is topped up with samples
            from the start of the permutation to a multiple of ``multiple_of`` (so every
            process gets the same share, as ``DistributedSampler`` pads).
        order: generator for the permutation; ``None`` keeps ``0..n-1``.
        multiple_of: batch sizes are made multiples of this (the number of processes).

    Returns:
        list of ``[B]`` int64 index tensors.
    """
    perm = torch.randperm(n, generator=order) if order is not None else torch.arange(n)
    batches = list(perm.split(batch_size))
    if batches and batches[-1].numel() < batch_size:
        if drop_last:
            batches.pop()
        else:
            short = (-batches[-1].numel()) % multiple_of
            if short:
                batches[-1] = torch.cat([batches[-1], perm[:short]])
    return batches


def model_input(x: Tensor, kind: str) -> Tensor:
    """Batch as the models take it: points ``[B, N, 3]`` -> ``[B, 3, N]``; images as they are."""
    return x.transpose(1, 2).contiguous() if kind == "points" else x


# -- augmentation ----------------------------------------------------------------------


def random_shift(x: Tensor, g: torch.Generator, fraction: float = 0.125) -> Tensor:
    """Shift each image by up to ``fraction`` of its size (zero fill). ``x: [B, C, H, W]``."""
    b, _, h, w = x.shape
    ph, pw = max(int(h * fraction), 1), max(int(w * fraction), 1)
    padded = F.pad(x, (pw, pw, ph, ph))
    dy = torch.randint(2 * ph + 1, (b,), generator=g)
    dx = torch.randint(2 * pw + 1, (b,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


#: Augmentation names usable in ``data.augment``, per input kind.
AUGMENTATIONS: dict[str, dict[str, Callable[[Tensor, torch.Generator], Tensor]]] = {
    "points": {
        "scale_translate": T.RandomScaleTranslate(),
        "shuffle": T.Shuffle(),
        "rotate_up": T.RandomRotate(axis=1),
        "rotate_so3": T.RandomRotateSO3(),
        "jitter": T.Jitter(),
        "dropout": T.PointDropout(),
    },
    "image": {"random_shift": random_shift},
}


def check_augment(kind: str, names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming any entry of ``names`` that is not an augmentation of
    ``kind`` inputs."""
    table = AUGMENTATIONS[kind]
    for name in names:
        if name not in table:
            raise ValueError(
                f"unknown {kind} augmentation {name!r} in data.augment; valid: {', '.join(table)}"
            )


def augment(x: Tensor, kind: str, names: Sequence[str], g: torch.Generator) -> Tensor:
    """Apply the augmentations ``names`` in order to the batch ``x``."""
    check_augment(kind, names)
    for name in names:
        x = AUGMENTATIONS[kind][name](x, g)
    return x
