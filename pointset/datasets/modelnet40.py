"""``ModelNet40``: 40 classes of CAD models as point clouds (Wu et al., CVPR 2015).

"3D ShapeNets: A Deep Representation for Volumetric Shapes",
https://modelnet.cs.princeton.edu/ - here in the ``modelnet40_ply_hdf5_2048`` release of
PointNet: ``ply_data_{train,test}{0,1,...}.h5`` with ``data [n, 2048, 3]`` float32 and
``label [n, 1]``, plus ``shape_names.txt`` (one class name per line, in label order).
The shards of a split are read in name order and concatenated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ._h5 import check_clouds, read_h5
from .base import PointCloudDataset, gather_points, sample_indices
from .errors import DatasetError

#: The 40 classes in label order (as in ``shape_names.txt``).
CLASS_NAMES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
    "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar",
    "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano",
    "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip

#: The release's folder name.
FOLDER = "modelnet40_ply_hdf5_2048"

DOWNLOAD_HINT = "get them with `pointset download modelnet40 --root {root}`"


def modelnet40_shards(folder: str | os.PathLike, split: str) -> list[Path]:
    """The ``ply_data_<split>*.h5`` shards in ``folder``, in name order."""
    return sorted(Path(folder).glob(f"ply_data_{split}*.h5"))


def resolve_folder(root: str | os.PathLike) -> Path:
    """``root/modelnet40_ply_hdf5_2048`` when it exists, else ``root`` itself."""
    nested = Path(root) / FOLDER
    return nested if nested.is_dir() else Path(root)


def read_class_names(folder: Path) -> tuple[str, ...]:
    """Names from ``shape_names.txt`` when present and of 40 lines, else :data:`CLASS_NAMES`."""
    path = folder / "shape_names.txt"
    if path.is_file():
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if len(names) != len(CLASS_NAMES):
            raise DatasetError(
                f"{path} lists {len(names)} class names, expected {len(CLASS_NAMES)}"
            )
        return names
    return CLASS_NAMES


class ModelNet40(PointCloudDataset):
    """ModelNet40 classification split, held in memory.

    Args:
        root: the ``modelnet40_ply_hdf5_2048`` folder or the folder that holds it.
        split: ``"train"`` (9,843 models) or ``"test"`` (2,468).
        num_points: points per model (at most the 2,048 stored); the first ones, as the
            official PointMLP code takes them, or FPS with ``sampling="fps"``.
        sampling: ``"first"`` or ``"fps"``.
        transform: applied to each item.

    Attributes:
        points ``[N, num_points, 3]`` float32, labels ``[N]`` int64, class_names, paths.

    Raises:
        DatasetError: missing root or shards (the message names them and how to get them),
            unreadable h5, missing ``data``/``label``, wrong shapes, labels outside
            ``[0, 40)``.
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_points: int = 1024,
        sampling: str = "first",
        transform: Callable | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        expected = f"{FOLDER}/ply_data_{split}0.h5, ..."
        hint = DOWNLOAD_HINT.format(root=root)
        if not Path(root).is_dir():
            raise DatasetError(
                f"ModelNet40 root {root} does not exist (expected {expected}); {hint}"
            )
        folder = resolve_folder(root)
        paths = modelnet40_shards(folder, split)
        if not paths:
            raise DatasetError(
                f"ModelNet40 has no {split} files in {folder} (expected "
                f"ply_data_{split}0.h5, ply_data_{split}1.h5, ...); {hint}"
            )
        names = read_class_names(folder)
        parts = [check_clouds(read_h5(p), p, len(names)) for p in paths]
        sizes = {d.shape[1] for d, _ in parts}
        if len(sizes) > 1:
            raise DatasetError(
                f"ModelNet40 {split} shards in {folder} differ in points per cloud: {sorted(sizes)}"
            )
        full = torch.from_numpy(np.concatenate([d for d, _ in parts]))
        labels = torch.from_numpy(np.concatenate([lab for _, lab in parts]))
        index = sample_indices(full, num_points, sampling)
        super().__init__(gather_points(full, index), labels, names, transform)
        self.split, self.paths = split, paths
