"""``SyntheticScenes``: built-in RGBD scenes with per-point class labels (segmentation).

The default segmentation dataset of pointset: no download, generated deterministically
from a seed on first use (about a second per hundred frames), stored under ``root``.

Each scene (world frame with the camera's axis convention: x right, y down, z forward,
metres; the floor is the plane ``y = 0``) is made as follows:

1. A room: the floor, a back wall at ``z = U(3.2, 4.0)`` and side walls at
   ``x = -+U(1.6, 2.2)``, each with a random tint (the floor is a checkerboard).
2. Four to six furniture-sized objects, their classes drawn without replacement from
   the six shape classes (sphere, cube, cylinder, cone, table, chair), with jittered sizes
   and random colours, placed on the floor without overlapping.
3. Clutter: zero to four small spheres, cubes, cylinders and cones (labelled with their
   shape class) on the floor or on a table top.
4. A camera at height ``U(0.9, 1.5)`` above the floor and a random position near the
   entrance, pitched down by ``U(20, 40)`` degrees and turned by ``U(-20, 20)`` degrees.
5. The frame is ray-cast by :func:`pointset.datasets.render.render_rgbd` at 160x120
   pixels (PrimeSense intrinsics scaled), giving colour, depth and a per-pixel label image.
6. Sensor noise: Gaussian depth noise ``sigma = U(2, 8)`` mm, missing depth at depth
   edges (each edge pixel with probability one half) and in one to three random blobs,
   and Gaussian colour noise (``sigma = 3/255``).
7. :func:`pointset.from_rgbd` back-projects the valid pixels (depth below 6 m); a seeded
   random subset of :data:`STORED_POINTS` of them is kept (repeating points only when a
   frame has fewer valid pixels).

Per item: ``points [6, N]`` (camera-frame xyz in metres, then rgb in ``[0, 1]``),
``labels [N]`` (:data:`CLASS_NAMES` indices) and ``pixel [N, 2]`` (row, col back-reference
into the frame). :meth:`SyntheticScenes.frame` re-renders any frame with its label image.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.point_set import PointSet
from .errors import DatasetError
from .render import Box, Frustum, PRIMESENSE_640x480, Sphere, render_rgbd

#: Class names, in label order.
CLASS_NAMES = ("floor", "wall", "sphere", "cube", "cylinder", "cone", "table", "chair")

#: Bumped whenever the generated numbers change; older files are then regenerated.
GENERATOR_VERSION = 1

#: Default scenes per split.
TRAIN_SCENES = 400
TEST_SCENES = 100

#: Points kept per frame in the stored files; items take the first ``num_points``.
STORED_POINTS = 2048

#: Frame size ``(width, height)`` and intrinsics ``(fx, fy, cx, cy)`` of the rendered frames.
FRAME_SIZE = (160, 120)
INTRINSICS = (
    PRIMESENSE_640x480[0] / 4,
    PRIMESENSE_640x480[1] / 4,
    (FRAME_SIZE[0] - 1) / 2,
    (FRAME_SIZE[1] - 1) / 2,
)
#: Depth units per metre of the rendered depth and the truncation used for the points.
DEPTH_SCALE = 1000.0
DEPTH_TRUNC = 6.0

MARKER = "synthetic_scenes.json"
_SPLIT_CODE = {"train": 1, "test": 2}
_SHAPE_CLASSES = ("sphere", "cube", "cylinder", "cone", "table", "chair")
_LABEL = {name: i for i, name in enumerate(CLASS_NAMES)}


@dataclass
class SceneFrame:
    """One rendered frame: ``color [H, W, 3]`` uint8, ``depth [H, W]`` uint16 (``DEPTH_SCALE``
    units per metre, 0 = missing), ``label [H, W]`` int64 (-1 where depth is missing) and the
    intrinsics ``(fx, fy, cx, cy)``."""

    color: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    intrinsics: tuple[float, float, float, float]


# -- scene layout ------------------------------------------------------------------------


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    import colorsys

    h, s, v = rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.45, 0.95)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _box(x: float, z: float, w: float, d: float, y0: float, y1: float, color, label) -> Box:
    """Axis-aligned box of footprint ``w x d`` centred at ``(x, z)`` between heights
    ``y0 > y1`` (``y`` down)."""
    return Box((x - w / 2, y1, z - d / 2), (x + w / 2, y0, z + d / 2), color, label)


def _legs(x, z, w, d, top, leg, color, label) -> list[Box]:
    return [
        _box(
            x + sx * (w / 2 - leg / 2), z + sz * (d / 2 - leg / 2), leg, leg, 0.0, top, color, label
        )
        for sx in (-1, 1)
        for sz in (-1, 1)
    ]


def _shape(name: str, x: float, z: float, rng: np.random.Generator, scale: float = 1.0):
    """Solids of one object of class ``name`` standing on the floor at ``(x, z)``, its
    footprint radius, and the height of its top (for clutter on tables)."""
    col, lab = _color(rng), _LABEL[name]
    u = lambda lo, hi: scale * rng.uniform(lo, hi)  # noqa: E731
    if name == "sphere":
        r = u(0.25, 0.4)
        return [Sphere((x, -r, z), r, col, lab)], r, None
    if name == "cube":
        w, h, d = u(0.4, 0.7), u(0.4, 0.7), u(0.4, 0.7)
        return [_box(x, z, w, d, 0.0, -h, col, lab)], 0.5 * math.hypot(w, d), None
    if name in ("cylinder", "cone"):
        r, h = (u(0.18, 0.3), u(0.5, 1.0)) if name == "cylinder" else (u(0.25, 0.4), u(0.6, 1.0))
        top = r if name == "cylinder" else 0.0
        return [Frustum((x, z), -h, 0.0, top, r, col, lab)], r, None
    if name == "table":
        w, d, h, leg = u(0.8, 1.2), u(0.6, 0.9), u(0.6, 0.8), u(0.06, 0.1)
        top = _box(x, z, w, d, -h, -h - 0.05, col, lab)
        return [top, *_legs(x, z, w, d, -h, leg, col, lab)], 0.5 * math.hypot(w, d), (w, d, h)
    # chair: seat, backrest on a random side, four legs
    s, h, back, leg = u(0.45, 0.55), u(0.42, 0.5), u(0.45, 0.6), u(0.05, 0.07)
    solids = [_box(x, z, s, s, -h, -h - 0.05, col, lab), *_legs(x, z, s, s, -h, leg, col, lab)]
    side = int(rng.integers(4))
    bx, bz = [(0, s / 2 - 0.025), (0, -s / 2 + 0.025), (s / 2 - 0.025, 0), (-s / 2 + 0.025, 0)][
        side
    ]
    bw, bd = (s, 0.05) if side < 2 else (0.05, s)
    solids.append(_box(x + bx, z + bz, bw, bd, -h - 0.05, -h - 0.05 - back, col, lab))
    return solids, 0.5 * math.hypot(s, s), None


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    """Camera-to-world rotation: pitch about x (positive looks down), then yaw about y."""
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    r_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return r_yaw @ r_pitch


def render_scene(rng: np.random.Generator) -> SceneFrame:
    """Lay out, render and corrupt one random scene (see the module docstring)."""
    wall_z, side = rng.uniform(3.2, 4.0), rng.uniform(1.6, 2.2)
    solids: list = []
    placed: list[tuple[float, float, float]] = []  # (x, z, footprint radius)
    tables: list[tuple[float, float, tuple[float, float, float]]] = []
    names = rng.permutation(_SHAPE_CLASSES)[: int(rng.integers(4, 7))]
    for name in names:
        for _ in range(30):  # rejection sampling of a free spot
            x, z = rng.uniform(-1.2, 1.2), rng.uniform(1.4, wall_z - 0.5)
            parts, radius, top = _shape(str(name), x, z, rng)
            if all(math.hypot(x - px, z - pz) > radius + pr + 0.05 for px, pz, pr in placed):
                solids += parts
                placed.append((x, z, radius))
                if top is not None:
                    tables.append((x, z, top))
                break
    for _ in range(int(rng.integers(0, 5))):
        name = str(rng.choice(_SHAPE_CLASSES[:4]))
        if tables and rng.random() < 0.5:
            x0, z0, (w, d, h) = tables[int(rng.integers(len(tables)))]
            x, z = x0 + rng.uniform(-0.3, 0.3) * w, z0 + rng.uniform(-0.3, 0.3) * d
            parts, _, _ = _shape(name, x, z, rng, scale=0.3)
            lift = np.array([0.0, -h - 0.05, 0.0])
            solids += [_lifted(p, lift) for p in parts]
        else:
            x, z = rng.uniform(-1.3, 1.3), rng.uniform(1.2, wall_z - 0.3)
            parts, radius, _ = _shape(name, x, z, rng, scale=0.3)
            if all(math.hypot(x - px, z - pz) > radius + pr for px, pz, pr in placed):
                solids += parts
                placed.append((x, z, radius))
    eye = np.array([rng.uniform(-0.4, 0.4), -rng.uniform(0.9, 1.5), rng.uniform(-0.2, 0.3)])
    pose = (_rotation(math.radians(rng.uniform(20, 40)), math.radians(rng.uniform(-20, 20))), eye)
    noise = rng.uniform(0.002, 0.008)
    width, height = FRAME_SIZE
    color, depth, label, k = render_rgbd(
        solids, width, height, INTRINSICS, floor_y=0.0, wall_z=wall_z, depth_scale=DEPTH_SCALE,
        noise_std=noise, seed=int(rng.integers(2**31)), pose=pose, side_walls=(-side, side),
        floor_label=_LABEL["floor"], wall_label=_LABEL["wall"],
        floor_tint=tuple(rng.uniform(0.7, 1.2, 3)), wall_tint=tuple(rng.uniform(0.7, 1.2, 3)),
        return_labels=True,
    )  # fmt: skip
    depth = _drop_depth(depth, rng)
    noisy = color.astype(np.float64) + rng.normal(0.0, 3.0, color.shape)
    color = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    label = np.where(depth > 0, label, -1)
    return SceneFrame(color, depth, label, k)


def _lifted(solid, shift: np.ndarray):
    """``solid`` moved by ``shift`` (metres)."""
    if isinstance(solid, Sphere):
        return Sphere(tuple(np.add(solid.center, shift)), solid.radius, solid.color, solid.label)
    if isinstance(solid, Box):
        lo, hi = tuple(np.add(solid.lo, shift)), tuple(np.add(solid.hi, shift))
        return Box(lo, hi, solid.color, solid.label)
    return Frustum(
        solid.axis_xz, solid.y_top + shift[1], solid.y_bottom + shift[1], solid.r_top,
        solid.r_bottom, solid.color, solid.label,
    )  # fmt: skip


def _drop_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Missing measurements: half of the pixels at depth edges (> 10 cm jumps) and one to
    three elliptic blobs."""
    z = depth.astype(np.float64)
    edge = np.zeros(depth.shape, dtype=bool)
    jump = 0.1 * DEPTH_SCALE
    edge[:, 1:] |= np.abs(np.diff(z, axis=1)) > jump
    edge[1:, :] |= np.abs(np.diff(z, axis=0)) > jump
    drop = edge & (rng.random(depth.shape) < 0.5)
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 4))):
        cu, cv = rng.uniform(0, w), rng.uniform(0, h)
        ru, rv = rng.uniform(3, 12), rng.uniform(3, 12)
        drop |= ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0
    return np.where(drop, 0, depth).astype(depth.dtype)


# -- frames -> points ----------------------------------------------------------------------


def frame_points(frame: SceneFrame, num_points: int, generator: torch.Generator) -> PointSet:
    """Back-project ``frame`` and keep a random ``num_points`` of its valid pixels.

    Returns:
        ``PointSet`` with ``pos [num_points, 3]``, ``x [num_points, 3]`` (rgb),
        ``y [num_points]`` labels and ``pixel [num_points, 2]``.
    """
    from ..data.rgbd import from_rgbd

    cloud = from_rgbd(frame.color, frame.depth, frame.intrinsics, DEPTH_SCALE, DEPTH_TRUNC)
    n = cloud.num_points
    if n == 0:
        raise DatasetError("a synthetic frame has no valid depth")
    order = torch.randperm(n, generator=generator)
    if n < num_points:
        order = torch.cat([order, torch.randint(n, (num_points - n,), generator=generator)])
    idx = order[:num_points]
    label = torch.from_numpy(frame.label)
    pixel = cloud.pixel[idx]
    return PointSet(
        pos=cloud.pos[idx], x=cloud.x[idx], pixel=pixel, y=label[pixel[:, 0], pixel[:, 1]]
    )


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def generate_split(
    split: str, count: int, seed: int = 0, num_points: int = STORED_POINTS
) -> dict[str, np.ndarray]:
    """``count`` scenes of ``split``: ``points [M, N, 6]`` float32, ``labels [M, N]`` int8,
    ``pixel [M, N, 2]`` int16."""
    points = np.zeros((count, num_points, 6), np.float32)
    labels = np.zeros((count, num_points), np.int8)
    pixel = np.zeros((count, num_points, 2), np.int16)
    for i in range(count):
        frame = render_scene(_scene_rng(seed, split, i))
        g = torch.Generator().manual_seed(seed * 1_000_003 + _SPLIT_CODE[split] * 100_003 + i)
        cloud = frame_points(frame, num_points, g)
        points[i] = torch.cat([cloud.pos, cloud.x], 1).numpy()
        labels[i], pixel[i] = cloud.y.numpy(), cloud.pixel.numpy()
    return {"points": points, "labels": labels, "pixel": pixel}


def make_synthetic_scenes(
    root: str | os.PathLike,
    seed: int = 0,
    train_scenes: int = TRAIN_SCENES,
    test_scenes: int = TEST_SCENES,
) -> Path:
    """Generate ``root/{train,test}.npz`` unless files of the same settings exist.

    A marker ``root/synthetic_scenes.json`` records the settings; files of other settings
    (or an older generator) are regenerated. Writes are atomic. Returns ``root``.
    """
    from .._files import atomic_path

    for name, value in (("train_scenes", train_scenes), ("test_scenes", test_scenes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    root = Path(root)
    fingerprint = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "train_scenes": train_scenes,
        "test_scenes": test_scenes,
        "stored_points": STORED_POINTS,
    }
    marker = root / MARKER
    files = {split: root / f"{split}.npz" for split in _SPLIT_CODE}
    if marker.is_file() and all(f.is_file() for f in files.values()):
        try:
            if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                return root
        except ValueError:
            pass
    root.mkdir(parents=True, exist_ok=True)
    if marker.exists():
        marker.unlink()  # the files below no longer match it until it is rewritten
    for split, count in (("train", train_scenes), ("test", test_scenes)):
        arrays = generate_split(split, count, seed)
        with atomic_path(str(files[split])) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    info = {"fingerprint": fingerprint, "classes": list(CLASS_NAMES)}
    with atomic_path(str(marker)) as tmp, open(tmp, "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return root


class SyntheticScenes(Dataset):
    """The built-in RGBD segmentation scenes, generated under ``root`` on first use.

    Args:
        root: folder of the generated files (see :func:`make_synthetic_scenes`).
        split: ``"train"`` or ``"test"``.
        num_points: points per item (at most :data:`STORED_POINTS`; the first ones of a
            random order, i.e. a uniform random subset of the frame's valid pixels).
        seed: generator seed.
        train_scenes, test_scenes: scenes per split.
        transform: applied to each item.

    Attributes:
        points: ``[M, N, 6]`` float32 (xyz metres in the camera frame, rgb in ``[0, 1]``).
        labels: ``[M, N]`` int64 in ``[0, 8)``.
        pixel: ``[M, N, 2]`` int64 ``(row, col)`` of each point in its frame.
        class_names: :data:`CLASS_NAMES`.

    Example::

        >>> ds = SyntheticScenes("data/synthetic_scenes", "test", num_points=1024)
        >>> ds.points.shape, ds.labels.shape
        (torch.Size([100, 1024, 6]), torch.Size([100, 1024]))
    """

    class_names = CLASS_NAMES
    intrinsics = INTRINSICS

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_points: int = 1024,
        seed: int = 0,
        train_scenes: int = TRAIN_SCENES,
        test_scenes: int = TEST_SCENES,
        transform: Callable | None = None,
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if isinstance(num_points, bool) or not isinstance(num_points, int):
            raise ValueError(f"num_points must be an int, got {num_points!r}")
        if not 1 <= num_points <= STORED_POINTS:
            raise ValueError(f"num_points must lie in [1, {STORED_POINTS}], got {num_points}")
        root = make_synthetic_scenes(root, seed, train_scenes, test_scenes)
        with np.load(root / f"{split}.npz") as f:
            self.points = torch.from_numpy(f["points"][:, :num_points].copy())
            self.labels = torch.from_numpy(f["labels"][:, :num_points].astype(np.int64))
            self.pixel = torch.from_numpy(f["pixel"][:, :num_points].astype(np.int64))
        self.split, self.seed, self.transform = split, seed, transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.points.size(0)

    def __getitem__(self, index: int) -> PointSet:
        p = self.points[index]
        item = PointSet(pos=p[:, :3], x=p[:, 3:], y=self.labels[index], pixel=self.pixel[index])
        return self.transform(item) if self.transform is not None else item

    def frame(self, index: int) -> SceneFrame:
        """Render frame ``index`` of this split again (colour, depth, label image)."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is out of range for {len(self)} scenes")
        return render_scene(_scene_rng(self.seed, self.split, index))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.split}: {len(self)} frames x {self.points.size(1)} "
            f"points, {self.num_classes} classes)"
        )
