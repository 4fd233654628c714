"""LAS / LAZ (ASPRS LiDAR) files through laspy, with the lazrs backend for LAZ.

Reading maps point records to point attributes as follows: ``x y z`` (the stored integers
with the header's scale and offset applied, float64) -> positions; ``red green blue``
(point formats 2, 3, 5, 7, 8, 10) -> colours (uint16); ``intensity``, ``return_number``,
``classification`` and then every extra-bytes dimension, in file order -> feature columns;
extra-bytes dimensions ``nx ny nz`` -> normals.

Writing uses LAS 1.4, point format 7 with colours and 6 without. Feature columns fill,
in order, ``intensity`` (integers in [0, 65535]), ``return_number`` ([0, 15]),
``classification`` ([0, 255]), then float extra-bytes dimensions ``feat_0 ...``; normals
become extra-bytes dimensions ``nx ny nz``. Each axis gets offset ``floor(min)`` and the
finest power-of-ten scale (at least 1e-9) whose integers hold the extent, so a written
coordinate is off by at most half its scale. Which channels of ``x`` are colours is
decided by ``pointset.write`` (``x_as``): the layout reading gives is recognised.

laspy and lazrs are optional: ``pip install pointset[io]``.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any, BinaryIO

import numpy as np

from .ply import PointArrays

INSTALL_HINT = "pip install pointset[io]"
NORMAL = ("nx", "ny", "nz")
#: Standard fields that hold feature columns: (name, dtype, largest value) for formats 6-10.
FIELDS = (
    ("intensity", np.uint16, 65535),
    ("return_number", np.uint8, 15),
    ("classification", np.uint8, 255),
)
_MIN_SCALE = 1e-9
_INT32_MAX = 2**31 - 1


def _laspy(path: str, compressed: bool) -> Any:
    """The laspy module, with a LAZ backend when ``compressed``; ImportError naming the extra."""
    try:
        import laspy
    except ImportError as exc:
        raise ImportError(f"{path}: .las/.laz files need laspy: {INSTALL_HINT}") from exc
    if compressed and not laspy.LazBackend.detect_available():
        raise ImportError(f"{path}: .laz files need the lazrs backend of laspy: {INSTALL_HINT}")
    return laspy


def _errors(laspy: Any) -> tuple[type[BaseException], ...]:
    """What laspy and its LAZ backends raise on malformed data (huge sizes: MemoryError)."""
    errors = (laspy.errors.LaspyException, ValueError, OSError, EOFError, struct.error, MemoryError)
    try:
        import lazrs
    except ImportError:
        return errors
    return (*errors, lazrs.LazrsError)


def _check_count(path: str, header: Any, size: int) -> None:
    """Reject a point count the file cannot hold before anything is allocated for it."""
    count = header.point_count
    if header.offset_to_point_data > size:
        raise ValueError(
            f"{path}: LAS file is truncated: points start at byte "
            f"{header.offset_to_point_data}, the file has {size}"
        )
    if header.are_points_compressed:
        if count > 8 * size:  # LAZ needs at least one bit per point
            raise ValueError(
                f"{path}: LAZ header declares {count} points, more than {size} bytes can hold"
            )
        return
    need = header.offset_to_point_data + count * header.point_format.size
    if need > size:
        raise ValueError(
            f"{path}: LAS file is truncated: {count} points need {need} bytes, {size} present"
        )


def read_las(path: str) -> PointArrays:
    """Read a LAS or LAZ file. Raises ``ValueError`` naming the file and the problem."""
    laspy = _laspy(path, path.lower().endswith(".laz"))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"LASF":
        raise ValueError(f"{path}: not a LAS file (it starts with {magic!r}, expected b'LASF')")
    size = os.path.getsize(path)
    try:
        reader = laspy.open(path)
    except _errors(laspy) as exc:
        raise ValueError(f"{path}: unreadable LAS header ({exc})") from exc
    with reader:
        header = reader.header
        _check_count(path, header, size)
        try:
            las = reader.read()
        except _errors(laspy) as exc:
            raise ValueError(f"{path}: unreadable LAS points ({exc})") from exc
    dims = set(las.point_format.dimension_names)
    pos = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    extra = list(las.point_format.extra_dimension_names)
    columns = [np.asarray(las[name], dtype=np.float64) for name, _, _ in FIELDS]
    names = [name for name, _, _ in FIELDS]
    for name in extra:
        if name not in NORMAL:
            value = np.asarray(las[name], dtype=np.float64)
            columns.append(value.reshape(len(pos), -1))
            names.append(name)
    out = PointArrays(pos=pos, feature_names=names)
    out.features = np.column_stack(columns) if len(pos) else np.zeros((0, len(names)))
    if all(n in extra for n in NORMAL):
        out.normal = np.stack([np.asarray(las[n]) for n in NORMAL], axis=1)
    if {"red", "green", "blue"} <= dims:
        out.color = np.stack([np.asarray(las[c]) for c in ("red", "green", "blue")], 1)
    if len(pos) != header.point_count:
        raise ValueError(
            f"{path}: LAS file is truncated: {header.point_count} points declared, {len(pos)} read"
        )
    return out


def _scale_offset(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis offset ``floor(min)`` and the finest power-of-ten scale fitting int32."""
    if len(pos) == 0:
        return np.full(3, 1e-3), np.zeros(3)
    offset = np.floor(pos.min(axis=0).astype(np.float64))
    extent = pos.max(axis=0).astype(np.float64) - offset
    scale = np.array(
        [
            max(_MIN_SCALE, 10.0 ** math.ceil(math.log10(e / (_INT32_MAX - 1)))) if e > 0 else 1e-3
            for e in extent
        ]
    )
    return scale, offset


def _check_field(path: str, name: str, values: np.ndarray, top: int) -> None:
    bad = ~((values >= 0) & (values <= top) & (values == np.round(values)))
    if bad.any():
        raise ValueError(
            f"{path}: feature column {name!r} must hold integers in [0, {top}] to be stored in "
            f"a LAS file, got {values[bad][0]!r}; feature columns are intensity, "
            "return_number, classification, then extra dimensions (x_as='none' drops them)"
        )


def _float(a: np.ndarray) -> type:
    """The extra-bytes type of float data: float64 stays, anything else is float32."""
    return np.float64 if a.dtype == np.float64 else np.float32


def write_las(
    f: BinaryIO,
    path: str,
    pos: np.ndarray,
    normal: np.ndarray | None = None,
    color: np.ndarray | None = None,
    features: np.ndarray | None = None,
) -> None:
    """Write points to an open binary file, LAZ-compressed when ``path`` ends in ``.laz``.

    ``pos [N, 3]``, ``normal [N, 3]``, ``color [N, 3]`` uint16, ``features [N, C]`` (see the
    module docstring for where the columns go). ``path`` names the destination in errors.
    """
    compressed = path.lower().endswith(".laz")
    laspy = _laspy(path, compressed)
    header = laspy.LasHeader(point_format=7 if color is not None else 6, version="1.4")
    scale, offset = _scale_offset(pos)
    header.scales, header.offsets = scale, offset
    num_fields = 0 if features is None else min(features.shape[1], len(FIELDS))
    extra = [] if features is None else list(range(num_fields, features.shape[1]))
    params = [laspy.ExtraBytesParams(f"feat_{i - num_fields}", _float(features)) for i in extra]
    if normal is not None:
        params += [laspy.ExtraBytesParams(n, _float(normal)) for n in NORMAL]
    if params:
        header.add_extra_dims(params)
    las = laspy.LasData(header)
    ints = np.round((pos.astype(np.float64) - offset) / scale).astype(np.int32)
    las.X, las.Y, las.Z = ints[:, 0], ints[:, 1], ints[:, 2]
    for i in range(num_fields):
        name, dtype, top = FIELDS[i]
        _check_field(path, name, features[:, i], top)
        las[name] = features[:, i].astype(dtype)
    for i in extra:
        las[f"feat_{i - num_fields}"] = features[:, i]
    if normal is not None:
        for i, name in enumerate(NORMAL):
            las[name] = normal[:, i]
    if color is not None:
        las.red, las.green, las.blue = color[:, 0], color[:, 1], color[:, 2]
    las.write(f, do_compress=compressed)
