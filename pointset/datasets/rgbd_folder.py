"""``RGBDFolder``: labelled RGBD frames in a folder, as fixed-size coloured point sets.

Layout: a ``frames.json`` at the folder's top lists the frames; paths are relative to the
folder::

    root/
      frames.json
      color/0000.png   depth/0000.png   ...

``frames.json``::

    {
      "classes": ["ball", "box"],            # optional: label names in index order
      "intrinsics": [525.0, 525.0, 319.5, 239.5],   # default fx, fy, cx, cy (pixels)
      "depth_scale": 1000.0,                 # default depth units per metre
      "depth_trunc": 3.0,                    # default: depths >= this (metres) dropped
      "frames": [
        {"color": "color/0000.png", "depth": "depth/0000.png", "label": "ball"},
        {"color": "color/0001.png", "depth": "depth/0001.png", "label": 1,
         "intrinsics": [262.5, 262.5, 159.5, 119.5], "depth_scale": 5000.0}
      ]
    }

- ``label`` is a class name (from ``classes``) or an index into it. Without ``classes``
  the names are the sorted distinct string labels (then every label must be a string).
- ``intrinsics``, ``depth_scale`` and ``depth_trunc`` may be given per frame, at the top
  (default for all frames) or left out: PrimeSense intrinsics, 1000 and 3.0.
- Colour: any image Pillow reads; depth: a single-channel image (16-bit PNG) or binary PGM.

Each frame goes through :func:`pointset.from_rgbd` (invalid and too-far depths dropped),
then to ``num_points`` points by farthest point sampling (from the first valid pixel) or
seeded uniform sampling; a frame with fewer valid points repeats some of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data import PRIMESENSE_DEFAULT, PinholeIntrinsics, PointSet, from_rgbd
from ..data.rgbd import read_color, read_depth
from ..data.transforms import Subsample
from .errors import DatasetError

INDEX_FILE = "frames.json"


@dataclass(frozen=True)
class RGBDFrame:
    """One entry of ``frames.json`` with defaults filled in and paths made absolute."""

    color: Path
    depth: Path
    label: int
    intrinsics: PinholeIntrinsics
    depth_scale: float
    depth_trunc: float


def _frame_setting(entry: dict, top: dict, key: str, default: Any) -> Any:
    return entry.get(key, top.get(key, default))


def load_frames_json(root: Path, index_file: str = INDEX_FILE) -> tuple[Path, dict, list]:
    """Read ``root/index_file``: ``(path, top-level mapping, non-empty 'frames' list)``."""
    path = root / index_file
    if not path.is_file():
        raise DatasetError(
            f"RGBD folder {root} has no {index_file} listing the frames "
            "(see the layout in datasets/README.md)"
        )
    try:
        top = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {' '.join(str(exc).split())}") from None
    entries = top.get("frames") if isinstance(top, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path} must hold an object with a non-empty 'frames' list")
    return path, top, entries


def frame_files(root: Path, entry: dict, keys: tuple[str, ...], where: str) -> dict[str, Path]:
    """The image files ``keys`` of one frame entry, each checked to be an existing file."""
    files = {}
    for key in keys:
        files[key] = root / str(entry[key])
        if files[key].is_dir():
            raise DatasetError(f"{where}: {key} image {files[key]} is a folder, not a file")
        if not files[key].is_file():
            raise DatasetError(f"{where}: {key} image {files[key]} does not exist")
    return files


def frame_camera(entry: dict, top: dict, where: str) -> tuple[PinholeIntrinsics, float, float]:
    """``(intrinsics, depth_scale, depth_trunc)`` of a frame: its own values, else the
    folder's, else PrimeSense defaults, 1000 and 3 m."""
    try:
        intrinsics = PinholeIntrinsics.from_any(
            _frame_setting(entry, top, "intrinsics", PRIMESENSE_DEFAULT)
        )
        scale = float(_frame_setting(entry, top, "depth_scale", 1000.0))
        trunc = float(_frame_setting(entry, top, "depth_trunc", 3.0))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: {' '.join(str(exc).split())}") from None
    if not (scale > 0 and trunc > 0):
        raise DatasetError(f"{where}: depth_scale and depth_trunc must be positive")
    return intrinsics, scale, trunc


def read_index(root: Path, index_file: str = INDEX_FILE) -> tuple[list[RGBDFrame], tuple[str, ...]]:
    """Parse and check ``root/index_file``; returns the frames and the class names."""
    path, top, entries = load_frames_json(root, index_file)
    classes = top.get("classes")
    if classes is None:
        names = [e.get("label") for e in entries if isinstance(e, dict)]
        if not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{path}: integer labels need a 'classes' list of names")
        classes = sorted(set(names))
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise DatasetError(f"{path}: 'classes' must be a list of non-empty names, got {classes!r}")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise DatasetError(f"{path}: 'classes' names {duplicates} more than once")
    classes = tuple(classes)
    frames = []
    for i, entry in enumerate(entries):
        where = f"{path} frame {i}"
        if not isinstance(entry, dict) or not {"color", "depth", "label"} <= entry.keys():
            raise DatasetError(f"{where} must have 'color', 'depth' and 'label', got {entry!r}")
        label = entry["label"]
        if isinstance(label, str):
            if label not in classes:
                raise DatasetError(f"{where}: label {label!r} is not one of {list(classes)}")
            label = classes.index(label)
        elif isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(classes):
            raise DatasetError(f"{where}: label {label!r} is not in [0, {len(classes)})")
        files = frame_files(root, entry, ("color", "depth"), where)
        intrinsics, scale, trunc = frame_camera(entry, top, where)
        frames.append(RGBDFrame(files["color"], files["depth"], label, intrinsics, scale, trunc))
    return frames, classes


class RGBDFolder(Dataset):
    """Labelled RGBD frames as coloured point sets of ``num_points`` points.

    Args:
        root: the folder (see the module docstring for ``frames.json``).
        num_points: points per item.
        sampling: ``"fps"`` (farthest point sampling from the first valid pixel) or
            ``"random"`` (uniform, seeded by ``seed`` and the item index).
        transform: applied to each item.
        seed: seed of the random sampling.
        index_file: name of the frame list.

    Attributes:
        frames (list of :class:`RGBDFrame`), labels ``[N]``, class_names.

    Items: ``pos [num_points, 3]`` camera-frame metres, ``x [num_points, 3]`` colours in
    ``[0, 1]``, ``pixel [num_points, 2]`` source ``(row, col)``, ``y [1]``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_points: int = 1024,
        sampling: str = "fps",
        transform: Callable | None = None,
        seed: int = 0,
        index_file: str = INDEX_FILE,
    ) -> None:
        if sampling not in ("fps", "random"):
            raise ValueError(f"sampling must be 'fps' or 'random', got {sampling!r}")
        self.sampler = Subsample(num_points, method=sampling)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"RGBD folder {root} does not exist")
        self.frames, self.class_names = read_index(self.root, index_file)
        self.labels = torch.tensor([f.label for f in self.frames], dtype=torch.long)
        self.num_points, self.seed, self.transform = num_points, seed, transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.frames)

    def load_frame(self, index: int) -> PointSet:
        """Frame ``index`` as a full point set (every valid pixel), without ``y``."""
        f = self.frames[index]
        try:
            color, depth = read_color(f.color), read_depth(f.depth)
            return from_rgbd(color, depth, f.intrinsics, f.depth_scale, f.depth_trunc)
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"RGBD frame {index} ({f.color.name}, {f.depth.name}): {exc}"
            ) from exc

    def __getitem__(self, index: int) -> PointSet:
        cloud = self.load_frame(index)
        n = cloud.num_points
        if n == 0:
            f = self.frames[index]
            raise DatasetError(
                f"RGBD frame {index} ({f.depth}) has no depth in (0, {f.depth_trunc}) m"
            )
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if n < self.num_points:  # repeat random points to reach the size
            extra = torch.randint(n, (self.num_points - n,), generator=g)
            idx = torch.cat([torch.arange(n), extra])
            cloud = PointSet(**{k: v[idx] for k, v in cloud.items()})
        else:
            cloud = self.sampler(cloud, generator=g)
        cloud.y = self.labels[index : index + 1]
        return self.transform(cloud) if self.transform is not None else cloud
