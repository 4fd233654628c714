"""``SyntheticShapes``: a built-in ScanObjectNN-format dataset of 15 procedural shapes.

The default dataset of pointset: no download, generated deterministically from a seed in a
few seconds, and written as a ScanObjectNN ``PB_T50_RS`` file pair that
:class:`~pointset.datasets.ScanObjectNN` itself loads, so the default exercises the real
loader.

Each object is made as follows (object units, ``y`` up):

1. A shape of its class (:data:`CLASS_NAMES`), each dimension jittered by
   ``U(0.85, 1.15)``, is sampled uniformly on its surface.
2. Anisotropic scale ``U(0.8, 1.25)`` per axis, then a rotation about the up axis.
3. Partial occlusion: a slab of up to 35 % of the surface, on the far side along a random,
   slightly tilted view direction, is removed (what one scan cannot see).
4. Background clutter, 10-30 % of the points (mask ``-1`` as in ScanObjectNN): a floor
   patch under the object, and with probability one half a clutter box beside it.
5. Gaussian noise (sigma 0.01), a random point order, and normalisation into the unit
   sphere (bounding-box centre at the origin, largest norm 1) including the background.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import _surfaces as S
from ._h5 import read_attrs, write_h5
from .errors import DatasetError
from .scanobjectnn import ScanObjectNN, scanobjectnn_files

#: Class names, in label order.
CLASS_NAMES = (
    "sphere",
    "cube",
    "cylinder",
    "cone",
    "torus",
    "pyramid",
    "capsule",
    "chair",
    "table",
    "l_shape",
    "cross",
    "ring",
    "bowl",
    "ellipsoid",
    "frame",
)

#: Bumped whenever the generated numbers change; older files are then regenerated.
GENERATOR_VERSION = 1

#: Default objects per class: 1,500 training and 600 test objects in all.
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 40

#: Name of the metadata file written beside the h5 pair.
MARKER = "synthetic_shapes.json"

_SPLIT_CODE = {"training": 1, "test": 2}


# -- shapes ------------------------------------------------------------------------------


def _legs(x: float, z: float, height: float, width: float) -> list[S.Part]:
    """Four square legs of ``height`` at ``(+-x, +-z)``, standing on ``y = 0``."""
    w = width / 2
    return [
        part
        for sx in (-1, 1)
        for sz in (-1, 1)
        for part in S.box((sx * x - w, 0, sz * z - w), (sx * x + w, height, sz * z + w))
    ]


def _chair(j: Callable[[float], float]) -> list[S.Part]:
    half, seat, back, leg = j(0.27), j(0.45), j(0.5), j(0.06)
    return (
        S.box((-half, seat, -half), (half, seat + 0.07, half))
        + S.box((-half, seat + 0.07, half - 0.06), (half, seat + 0.07 + back, half))
        + _legs(half - leg, half - leg, seat, leg)
    )


def _table(j: Callable[[float], float]) -> list[S.Part]:
    hx, hz, height, leg = j(0.55), j(0.35), j(0.7), j(0.06)
    return S.box((-hx, height, -hz), (hx, height + 0.06, hz)) + _legs(
        hx - 1.5 * leg, hz - 1.5 * leg, height, leg
    )


def _l_shape(j: Callable[[float], float]) -> list[S.Part]:
    t, depth, height, length = j(0.2), j(0.2), j(1.0), j(0.7)
    return S.box((-0.3, 0, -depth), (-0.3 + t, height, depth)) + S.box(
        (-0.3 + t, 0, -depth), (-0.3 + length, t, depth)
    )


def _cross(j: Callable[[float], float]) -> list[S.Part]:
    t, height, arm, at = j(0.1), j(1.0), j(0.42), j(0.62)
    return S.box((-t, 0, -t), (t, height, t)) + S.box((-arm, at - t, -t), (arm, at + t, t))


def _frame(j: Callable[[float], float]) -> list[S.Part]:
    w, h, bar, d = j(0.5), j(0.5), j(0.1), j(0.06)
    return (
        S.box((-w, -h, -d), (w, -h + 2 * bar, d))
        + S.box((-w, h - 2 * bar, -d), (w, h, d))
        + S.box((-w, -h + 2 * bar, -d), (-w + 2 * bar, h - 2 * bar, d))
        + S.box((w - 2 * bar, -h + 2 * bar, -d), (w, h - 2 * bar, d))
    )


def _ring(j: Callable[[float], float]) -> list[S.Part]:
    r_out, width, h = j(0.5), j(0.17), j(0.1)
    r_in = r_out - width
    return (
        S.disc((0, h / 2, 0), r_out, r_in)
        + S.disc((0, -h / 2, 0), r_out, r_in)
        + S.tube((0, 0, 0), r_out, h)
        + S.tube((0, 0, 0), r_in, h)
    )


def _bowl(j: Callable[[float], float]) -> list[S.Part]:
    r, wall = j(0.5), j(0.05)
    return (
        S.hemisphere((0, 0, 0), r, sign=-1.0)
        + S.hemisphere((0, 0, 0), r - wall, sign=-1.0)
        + S.disc((0, 0, 0), r, r - wall)
    )


def _capsule(j: Callable[[float], float]) -> list[S.Part]:
    r, length = j(0.22), j(0.7)
    return (
        S.tube((0, 0, 0), r, length, axis="x")
        + S.hemisphere((length / 2, 0, 0), r, axis="x", sign=1.0)
        + S.hemisphere((-length / 2, 0, 0), r, axis="x", sign=-1.0)
    )


def _pyramid(j: Callable[[float], float]) -> list[S.Part]:
    h, b = j(0.85), j(0.5)
    corners = [(-b, 0, -b), (b, 0, -b), (b, 0, b), (-b, 0, b)]
    apex = (0, h, 0)
    sides = [p for i in range(4) for p in S.triangle(corners[i], corners[(i + 1) % 4], apex)]
    base = S.triangle(corners[0], corners[1], corners[2]) + S.triangle(*corners[2:], corners[0])
    return sides + base


_SHAPES: dict[str, Callable[[Callable[[float], float]], list[S.Part]]] = {
    "sphere": lambda j: S.sphere((0, 0, 0), j(0.5)),
    "cube": lambda j: S.box((-j(0.45), -j(0.45), -j(0.45)), (j(0.45), j(0.45), j(0.45))),
    "cylinder": lambda j: (
        lambda r, h: S.tube((0, 0, 0), r, h) + S.disc((0, h / 2, 0), r) + S.disc((0, -h / 2, 0), r)
    )(j(0.33), j(1.0)),
    "cone": lambda j: (lambda r, h: S.cone((0, 0, 0), r, h) + S.disc((0, 0, 0), r))(
        j(0.45), j(1.0)
    ),
    "torus": lambda j: S.torus((0, 0, 0), j(0.4), j(0.12), axis="z"),
    "pyramid": _pyramid,
    "capsule": _capsule,
    "chair": _chair,
    "table": _table,
    "l_shape": _l_shape,
    "cross": _cross,
    "ring": _ring,
    "bowl": _bowl,
    "ellipsoid": lambda j: S.sphere((0, 0, 0), 1.0, (j(0.55), j(0.22), j(0.55))),
    "frame": _frame,
}
assert tuple(_SHAPES) == CLASS_NAMES


# -- nuisances ---------------------------------------------------------------------------


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _occlude(pts: np.ndarray, rng: np.random.Generator, max_fraction: float) -> np.ndarray:
    """Drop the far slab (up to ``max_fraction`` of the points) along a random view."""
    phi, tilt = rng.uniform(0, 2 * math.pi), rng.uniform(-0.3, 0.3)
    view = np.array([math.cos(phi), tilt, math.sin(phi)])
    depth = (pts - pts.mean(0)) @ view
    cut = np.quantile(depth, 1.0 - rng.uniform(0.0, max_fraction))
    return pts[depth <= cut]


def _background(obj: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` clutter points: a floor patch under ``obj`` and maybe a box beside it."""
    lo, hi = obj.min(0), obj.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    n_box = int(round(n * rng.uniform(0.3, 0.5))) if rng.random() < 0.5 else 0
    reach = half[[0, 2]] * rng.uniform(1.1, 1.8, size=2)
    floor = np.empty((n - n_box, 3))
    floor[:, 0] = centre[0] + rng.uniform(-1, 1, n - n_box) * reach[0]
    floor[:, 1] = lo[1]
    floor[:, 2] = centre[2] + rng.uniform(-1, 1, n - n_box) * reach[1]
    if n_box == 0:
        return floor
    size = (hi - lo).max() * rng.uniform(0.2, 0.45, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    spot = centre[[0, 2]] + (half[[0, 2]].max() + size[[0, 2]].max() / 2) * np.array(
        [math.cos(angle), math.sin(angle)]
    )
    box_lo = np.array([spot[0] - size[0] / 2, lo[1], spot[1] - size[2] / 2])
    clutter = S.sample_parts(S.box(box_lo, box_lo + size), n_box, rng)
    return np.concatenate([floor, clutter], 0)


def make_object(
    label: int, rng: np.random.Generator, num_points: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """One scan-like object of class ``label``.

    Returns:
        ``points [num_points, 3]`` float32 inside the unit sphere and ``mask [num_points]``
        int32: ``0`` on the object, ``-1`` on background clutter.
    """
    shape = _SHAPES[CLASS_NAMES[label]]
    parts = shape(lambda v: v * rng.uniform(0.85, 1.15))
    n_bg = int(round(num_points * rng.uniform(0.1, 0.3)))
    n_obj = num_points - n_bg
    obj = S.sample_parts(parts, 2 * n_obj, rng)
    obj = obj * rng.uniform(0.8, 1.25, size=3)
    obj = obj @ _rotation_y(rng.uniform(0, 2 * math.pi)).T
    obj = _occlude(obj, rng, 0.35)
    obj = obj[rng.choice(len(obj), n_obj, replace=False)]
    bg = _background(obj, n_bg, rng)
    pts = np.concatenate([obj, bg], 0) + rng.normal(0.0, 0.01, size=(num_points, 3))
    mask = np.concatenate([np.zeros(n_obj, np.int32), np.full(n_bg, -1, np.int32)])
    order = rng.permutation(num_points)
    pts, mask = pts[order], mask[order]
    pts -= (pts.min(0) + pts.max(0)) / 2
    pts /= np.linalg.norm(pts, axis=1).max()
    return pts.astype(np.float32), mask


def generate_split(
    split: str, per_class: int, seed: int = 0, num_points: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All objects of one split, in a seeded random class order.

    Object ``i`` of class ``c`` depends only on ``(seed, split, c, i)``, so a larger
    ``per_class`` keeps the smaller set's objects.

    Returns:
        ``data [N, num_points, 3]`` float32, ``label [N]`` int64, ``mask [N, num_points]``
        int32, ``N = 15 * per_class``.
    """
    code = _SPLIT_CODE[split]
    items = [(c, i) for c in range(len(CLASS_NAMES)) for i in range(per_class)]
    order = np.random.default_rng([seed, code]).permutation(len(items))
    data = np.empty((len(items), num_points, 3), np.float32)
    mask = np.empty((len(items), num_points), np.int32)
    label = np.empty(len(items), np.int64)
    for row, k in enumerate(order):
        c, i = items[k]
        data[row], mask[row] = make_object(c, np.random.default_rng([seed, code, c, i]), num_points)
        label[row] = c
    return data, label, mask


# -- files -------------------------------------------------------------------------------


def _fingerprint(seed: int, train_per_class: int, test_per_class: int, num_points: int) -> dict:
    return {
        "generator": "pointset.datasets.synthetic_shapes",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "num_points": num_points,
        "class_names": list(CLASS_NAMES),
    }


def _is_current(folder: Path, names: dict[str, str], fingerprint: dict) -> bool:
    """Whether ``folder`` holds the marker and both files made with ``fingerprint``."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("fingerprint") != fingerprint:
        return False
    for name in names.values():
        path = folder / name
        info = marker.get("files", {}).get(name, {})
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return False
        if read_attrs(path).get("pointset_synthetic") != json.dumps(fingerprint, sort_keys=True):
            return False
    return True


def make_synthetic_scanobjectnn(
    root: str | os.PathLike,
    seed: int = 0,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
    num_points: int = 2048,
) -> Path:
    """Write the synthetic ScanObjectNN ``PB_T50_RS`` pair under ``root`` (if not current).

    Writes ``root/main_split/{training,test}_objectdataset_augmentedrot_scale75.h5`` (keys
    ``data [N, num_points, 3]`` float32, ``label [N]`` int64, ``mask [N, num_points]``
    int32 with ``-1`` on background points) and ``root/main_split/synthetic_shapes.json``
    (parameters, class names, file sizes). Files are written to a temporary folder inside
    ``root`` and renamed into place; a current set (same parameters and generator
    version) is left alone. Safe to call from several processes at once.

    Raises:
        DatasetError: ``root/main_split`` already holds ScanObjectNN files that this
            generator did not write (a real download is never overwritten).

    Returns:
        ``root`` as a :class:`~pathlib.Path`, ready for :class:`ScanObjectNN`.
    """
    for name, value in (
        ("train_per_class", train_per_class),
        ("test_per_class", test_per_class),
        ("num_points", num_points),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    root = Path(root)
    names = {split: Path(rel).name for split, rel in scanobjectnn_files("PB_T50_RS").items()}
    folder = root / "main_split"
    fingerprint = _fingerprint(seed, train_per_class, test_per_class, num_points)
    if _is_current(folder, names, fingerprint):
        return root
    if not (folder / MARKER).exists() and any((folder / n).exists() for n in names.values()):
        raise DatasetError(
            f"{folder} holds ScanObjectNN files not made by the synthetic generator; "
            "choose another root for the synthetic dataset"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        staged = tmp / "main_split"
        staged.mkdir()
        files = {}
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            prefix = "training" if split == "train" else "test"
            data, label, mask = generate_split(prefix, per_class, seed, num_points)
            attrs = {"pointset_synthetic": json.dumps(fingerprint, sort_keys=True)}
            write_h5(staged / names[split], {"data": data, "label": label, "mask": mask}, attrs)
            files[names[split]] = {
                "bytes": (staged / names[split]).stat().st_size,
                "count": len(label),
            }
        marker = {"fingerprint": fingerprint, "files": files}
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.rename(staged, folder)  # the whole folder at once when it is new
        except OSError:
            folder.mkdir(parents=True, exist_ok=True)
            # The marker goes first: it describes the new files, so a crash between the
            # renames leaves a set that fails the check above and is regenerated.
            for name in (MARKER, *names.values()):
                os.replace(staged / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class SyntheticShapes(ScanObjectNN):
    """The synthetic ScanObjectNN-format dataset, generated under ``root`` on first use.

    Loads through :class:`ScanObjectNN` (variant ``PB_T50_RS``), with :data:`CLASS_NAMES`.

    Args:
        root: data root; the files go to ``root/main_split`` (see
            :func:`make_synthetic_scanobjectnn`).
        split: ``"train"`` or ``"test"``.
        num_points: points per object (the first ``num_points`` of 2,048, or FPS).
        seed: generator seed.
        transform: applied to each item (see :mod:`pointset.data.transforms`).
        sampling: ``"first"`` or ``"fps"``, as in :class:`ScanObjectNN`.
        train_per_class, test_per_class: objects per class in each split.

    Example::

        >>> ds = SyntheticShapes("datasets/synthetic_shapes", "train")
        >>> ds.points.shape, ds.labels.shape
        (torch.Size([1500, 1024, 3]), torch.Size([1500]))
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_points: int = 1024,
        seed: int = 0,
        transform: Callable | None = None,
        sampling: str = "first",
        train_per_class: int = TRAIN_PER_CLASS,
        test_per_class: int = TEST_PER_CLASS,
    ) -> None:
        make_synthetic_scanobjectnn(root, seed, train_per_class, test_per_class)
        super().__init__(root, "PB_T50_RS", split, num_points, sampling, transform)
