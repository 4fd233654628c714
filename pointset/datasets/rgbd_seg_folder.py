"""``RGBDSegFolder``: RGBD frames with per-pixel label images, as labelled point sets.

For frames exported from RGBD segmentation datasets (e.g. NYU-Depth-v2's labelled frames).
Layout: a ``frames.json`` at the folder's top lists colour / depth / label triplets; paths
are relative to the folder::

    root/
      frames.json
      color/0000.png   depth/0000.png   label/0000.png   ...

``frames.json``::

    {
      "classes": ["wall", "floor", "cabinet", ...],   # label names in index order
      "intrinsics": [518.86, 519.47, 325.58, 253.74], # default fx, fy, cx, cy (pixels)
      "depth_scale": 1000.0,          # default depth units per metre
      "depth_trunc": 10.0,            # default: depths >= this (metres) dropped
      "label_offset": 1,              # subtracted from the stored values (default 0)
      "ignore_value": 0,              # stored value of unlabelled pixels (default 255)
      "frames": [
        {"color": "color/0000.png", "depth": "depth/0000.png", "label": "label/0000.png"}
      ]
    }

- A label image is a single-channel 8- or 16-bit PNG of the depth image's size; pixel
  value ``v`` is class ``v - label_offset``; ``ignore_value`` marks unlabelled pixels
  (label ``-1``). Any other value outside ``[0, len(classes))`` is an error.
- ``intrinsics``, ``depth_scale`` and ``depth_trunc`` may be given per frame or at the top;
  the defaults are PrimeSense intrinsics, 1000 and 3.0 (as :class:`RGBDFolder`).
- NYU-Depth-v2 (``nyu_depth_v2_labeled.mat``): export ``images`` as colour PNGs, ``depths``
  (metres) times 1000 as 16-bit PNGs and ``labels`` (0 = unlabelled, 1..894) or a 40-class
  mapping of them as 16-bit PNGs, with ``label_offset: 1`` and ``ignore_value: 0``.

Each frame goes through :func:`pointset.from_rgbd` (invalid depth dropped), the label of
each kept pixel is read through its ``pixel`` back-reference, and a seeded random subset of
``num_points`` points is kept (points repeat only when a frame has fewer valid pixels).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import PinholeIntrinsics, PointSet, from_rgbd
from ..data.rgbd import read_color, read_depth
from .errors import DatasetError
from .rgbd_folder import INDEX_FILE, frame_camera, frame_files, load_frames_json


@dataclass(frozen=True)
class LabeledFrame:
    """One entry of ``frames.json`` with defaults filled in and paths made absolute."""

    color: Path
    depth: Path
    label: Path
    intrinsics: PinholeIntrinsics
    depth_scale: float
    depth_trunc: float


def read_seg_index(root: Path, index_file: str = INDEX_FILE) -> tuple[list[LabeledFrame], dict]:
    """Parse and check ``root/index_file``; returns the frames and the top-level mapping."""
    path, top, entries = load_frames_json(root, index_file)
    classes = top.get("classes")
    if not isinstance(classes, list) or not classes:
        raise DatasetError(f"{path} needs a non-empty 'classes' list of label names")
    frames = []
    for i, entry in enumerate(entries):
        where = f"{path} frame {i}"
        if not isinstance(entry, dict) or not {"color", "depth", "label"} <= entry.keys():
            raise DatasetError(f"{where} must have 'color', 'depth' and 'label', got {entry!r}")
        files = frame_files(root, entry, ("color", "depth", "label"), where)
        k, scale, trunc = frame_camera(entry, top, where)
        frames.append(LabeledFrame(files["color"], files["depth"], files["label"], k, scale, trunc))
    return frames, top


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """A single-channel label PNG as ``[H, W]`` int64."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise DatasetError(f"label image {path} must have one channel, got shape {arr.shape}")
    return arr.astype(np.int64)


class RGBDSegFolder(Dataset):
    """RGBD frames with label images as labelled coloured point sets of ``num_points``.

    Args:
        root: the folder (see the module docstring for ``frames.json``).
        num_points: points per frame.
        seed: seed of the random point subsets.
        transform: applied to each item.
        index_file: name of the frame list.

    Attributes:
        points: ``[M, num_points, 6]`` float32 (camera-frame xyz metres, rgb in ``[0, 1]``).
        labels: ``[M, num_points]`` int64 (``-1`` = unlabelled).
        pixel: ``[M, num_points, 2]`` int64 ``(row, col)`` in the frame.
        class_names: from ``frames.json``.

    Raises:
        DatasetError: one line for a missing file, a label image whose size differs from its
            depth image, or stored labels out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_points: int = 1024,
        seed: int = 0,
        transform: Callable | None = None,
        index_file: str = INDEX_FILE,
    ) -> None:
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"RGBD folder {root} does not exist")
        self.frames, top = read_seg_index(self.root, index_file)
        self.class_names = tuple(str(c) for c in top["classes"])
        self.label_offset = int(top.get("label_offset", 0))
        self.ignore_value = int(top.get("ignore_value", 255))
        self.num_points, self.seed, self.transform = num_points, seed, transform
        items = [self._sample(i) for i in range(len(self.frames))]
        self.points = torch.stack([torch.cat([c.pos, c.x], 1) for c in items])
        self.labels = torch.stack([c.y for c in items])
        self.pixel = torch.stack([c.pixel for c in items])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.frames)

    def load_frame(self, index: int) -> PointSet:
        """Frame ``index`` as a full point set (every valid pixel) with labels ``y [P]``."""
        f = self.frames[index]
        try:
            color, depth = read_color(f.color), read_depth(f.depth)
            cloud = from_rgbd(color, depth, f.intrinsics, f.depth_scale, f.depth_trunc)
        except (OSError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            raise DatasetError(
                f"RGBD frame {index} ({f.color.name}, {f.depth.name}): {msg}"
            ) from None
        raw = read_label_image(f.label)
        if raw.shape != depth.shape:
            raise DatasetError(
                f"label image {f.label} is {raw.shape[1]}x{raw.shape[0]} (W x H) but its depth "
                f"image {f.depth} is {depth.shape[1]}x{depth.shape[0]}"
            )
        labels = raw - self.label_offset
        ignored = raw == self.ignore_value
        bad = ~ignored & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            value = int(raw[bad][0])
            raise DatasetError(
                f"label image {f.label} holds value {value}, outside the "
                f"{self.num_classes} classes (label_offset {self.label_offset}, "
                f"ignore_value {self.ignore_value})"
            )
        labels = torch.from_numpy(np.where(ignored, -1, labels))
        cloud.y = labels[cloud.pixel[:, 0], cloud.pixel[:, 1]]
        return cloud

    def _sample(self, index: int) -> PointSet:
        cloud = self.load_frame(index)
        n = cloud.num_points
        if n == 0:
            f = self.frames[index]
            raise DatasetError(
                f"RGBD frame {index} ({f.depth}) has no depth in (0, {f.depth_trunc}) m"
            )
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        order = torch.randperm(n, generator=g)
        if n < self.num_points:
            order = torch.cat([order, torch.randint(n, (self.num_points - n,), generator=g)])
        idx = order[: self.num_points]
        return PointSet(**{k: v[idx] for k, v in cloud.items()})

    def __getitem__(self, index: int) -> PointSet:
        p = self.points[index]
        item = PointSet(pos=p[:, :3], x=p[:, 3:], y=self.labels[index], pixel=self.pixel[index])
        return self.transform(item) if self.transform is not None else item
