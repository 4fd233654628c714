"""``DigitsPoints``: scikit-learn's handwritten digits as images and image point sets.

The 1,797 8x8 grey images of ``sklearn.datasets.load_digits`` (UCI "Optical Recognition of
Handwritten Digits", shipped inside scikit-learn, so no download) for the image backbones:
grey levels ``0..16`` are scaled to ``[0, 1]``, copied to three channels and optionally
upsampled (bilinear) so that strided stems and region folding have room. A fixed,
stratified, seeded share of each class is held out as the test split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..data import PointSet, from_image

CLASS_NAMES = tuple(str(d) for d in range(10))


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (each sorted): per class, ``round(test_fraction * n_c)``
    seeded random members go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * len(members)))
        test.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digit_images(image_size: int = 32) -> tuple[Tensor, Tensor]:
    """All 1,797 digits: ``images [N, 3, S, S]`` float32 in ``[0, 1]``, ``labels [N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != images.size(-1):
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
        images = images.clamp_(0.0, 1.0)
    return images.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits.target).long()


class DigitsPoints(Dataset):
    """The digits as ``[3, S, S]`` images in ``[0, 1]``, and as image point sets.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: seed of the held-out split.
        test_fraction: share of each class held out (default 0.2: 1,438 train, 359 test).
        image_size: side ``S`` of the (bilinearly upsampled) images; 8 keeps the originals.
        transform: applied to each item.

    Attributes:
        images ``[N, 3, S, S]`` float32, labels ``[N]`` int64, class_names ``"0".."9"``,
        indices ``[N]`` (rows of ``load_digits()``).

    Items are :func:`pointset.from_image` point sets (``x [S*S, 3]``, ``pos [S*S, 2]``,
    ``grid_size``) with ``y [1]``.
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        test_fraction: float = 0.2,
        image_size: int = 32,
        transform: Callable | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        images, labels = load_digit_images(image_size)
        train, test = stratified_split(labels.numpy(), test_fraction, seed)
        keep = torch.from_numpy(train if split == "train" else test)
        self.images, self.labels, self.indices = images[keep], labels[keep], keep
        self.split, self.transform = split, transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> PointSet:
        item = from_image(self.images[index])
        item.y = self.labels[index : index + 1]
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        s = self.images.size(-1)
        return f"DigitsPoints({self.split}: {len(self)} images of 3x{s}x{s}, 10 classes)"
