"""``ScanObjectNN``: real-world object scans, 15 classes (Uy et al., ICCV 2019).

"Revisiting Point Cloud Classification: A New Benchmark Dataset and Classification Model on
Real-World Data", https://hkust-vgd.github.io/scanobjectnn/

The h5 release stores each split as ``data [N, 2048, 3]`` float32, ``label [N]`` and
``mask [N, 2048]`` (``-1`` on background points). Variants and their files, relative to
the data root (which may also be the folder that contains ``h5_files/``):

=========== =================================================================
variant     files
=========== =================================================================
PB_T50_RS   ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``
PB_T50_R    ``main_split/{training,test}_objectdataset_augmentedrot.h5``
PB_T25_R    ``main_split/{training,test}_objectdataset_augmented25rot.h5``
PB_T25      ``main_split/{training,test}_objectdataset_augmented25_norot.h5``
OBJ_BG      ``main_split/{training,test}_objectdataset.h5``
OBJ_ONLY    ``main_split_nobg/{training,test}_objectdataset.h5``
=========== =================================================================

As the official PointMLP code does, an item is the first ``num_points`` of the stored
2,048 points (their stored order is random); ``sampling="fps"`` uses farthest point
sampling instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ._h5 import check_clouds, read_h5
from .base import PointCloudDataset, gather_points, sample_indices
from .errors import DatasetError

#: The 15 classes in label order.
CLASS_NAMES = (
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
)

#: variant -> (folder, file suffix after ``{training,test}_objectdataset``).
VARIANTS = {
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
    "PB_T50_R": ("main_split", "_augmentedrot"),
    "PB_T25_R": ("main_split", "_augmented25rot"),
    "PB_T25": ("main_split", "_augmented25_norot"),
    "OBJ_BG": ("main_split", ""),
    "OBJ_ONLY": ("main_split_nobg", ""),
}

SPLITS = ("train", "test")


def scanobjectnn_files(variant: str = "PB_T50_RS") -> dict[str, str]:
    """``{"train": path, "test": path}``: a variant's files relative to the data root."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ScanObjectNN variant {variant!r}; valid: {', '.join(VARIANTS)}")
    folder, suffix = VARIANTS[variant]
    return {
        split: f"{folder}/{prefix}_objectdataset{suffix}.h5"
        for split, prefix in (("train", "training"), ("test", "test"))
    }


def download_hint(variant: str, root: str | os.PathLike) -> str:
    """How to get a variant's files into ``root``."""
    name = "scanobjectnn" if variant == "PB_T50_RS" else "scanobjectnn_full"
    return f"get them with `pointset download {name} --root {root}`"


def resolve_root(root: str | os.PathLike, marker: str) -> Path:
    """``root``, or ``root/h5_files`` when the files sit there (the archive's top folder)."""
    root = Path(root)
    nested = root / "h5_files"
    if not (root / marker).exists() and (nested / marker).exists():
        return nested
    return root


class ScanObjectNN(PointCloudDataset):
    """ScanObjectNN classification split, held in memory.

    Args:
        root: folder holding ``main_split/`` (and ``main_split_nobg/``), or the folder that
            holds ``h5_files/`` with them.
        variant: one of :data:`VARIANTS` (default the hardest, ``PB_T50_RS``).
        split: ``"train"`` or ``"test"``.
        num_points: points per object (at most the 2,048 stored).
        sampling: ``"first"`` (official) or ``"fps"``.
        transform: applied to each item.

    Attributes:
        points ``[N, num_points, 3]`` float32, labels ``[N]`` int64, masks
        ``[N, num_points]`` int64 (``-1`` = background; ``None`` if the file has no mask),
        class_names, path (the h5 file read).

    Raises:
        DatasetError: missing root or file (the message names the expected files and how
            to get them), unreadable h5, missing ``data``/``label``, wrong shapes, labels
            outside ``[0, 15)``.
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        variant: str = "PB_T50_RS",
        split: str = "train",
        num_points: int = 1024,
        sampling: str = "first",
        transform: Callable | None = None,
    ) -> None:
        files = scanobjectnn_files(variant)
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        name = type(self).__name__
        expected = " and ".join(files.values())
        if not Path(root).is_dir():
            raise DatasetError(
                f"{name} root {root} does not exist (expected {expected} under it); "
                + download_hint(variant, root)
            )
        base = resolve_root(root, files[split])
        path = base / files[split]
        if not path.exists():  # a folder in its place is named by read_h5
            raise DatasetError(
                f"{name} {variant} {split} file {path} is missing (expected {expected} "
                f"under {base}); " + download_hint(variant, root)
            )
        arrays = read_h5(path, optional=("mask",))
        data, label = check_clouds(arrays, path, len(self.class_names))
        self.variant, self.split, self.path = variant, split, path
        full = torch.from_numpy(data)
        index = sample_indices(full, num_points, sampling)
        super().__init__(gather_points(full, index), torch.from_numpy(label), transform=transform)
        mask = arrays.get("mask")
        self.masks = (
            gather_points(torch.from_numpy(mask.astype("int64")), index)
            if mask is not None and mask.shape == data.shape[:2]
            else None
        )
