"""Point-set files: ``read(path)`` and ``write(path, points)``, format chosen by suffix.

======== ===================================================================================
suffix   contents
======== ===================================================================================
.ply     vertices (ascii or binary); ``x y z``, normals ``nx ny nz``, colours
         ``red green blue`` (uchar), other scalar properties as features; faces and
         list properties are skipped (own reader/writer)
.pcd     PCL format (ascii, binary, binary_compressed); ``x y z``, ``normal_*``, packed
         ``rgb``, other fields as features (own reader/writer)
.xyz     text, one point per line: ``x y z`` then the feature columns
.npy     one array ``[N, 3 + C]``: positions then features
.npz     arrays named after the attributes: ``pos`` (required), ``x``, ``normal``, ...
.h5      datasets named after the attributes, like ``.npz``
.las     LiDAR scans (LAS 1.0-1.4, any point format; .laz compressed): scaled ``x y z``,
.laz     ``red green blue``, then ``intensity return_number classification`` and extra
         dimensions as features (laspy + lazrs: ``pip install pointset[io]``; see ``las``)
======== ===================================================================================

Reading: colours become ``x`` in ``[0, 1]`` (divided by 255, or 65535 for LAS), followed
by any other feature columns; normals become ``normal [N, 3]``. Points whose coordinates
are not finite (organized scans mark holes with NaN) are dropped from .ply, .pcd and .xyz
files. ``dtype=None`` keeps the file's floating precision (float32 for text and integer
data, float64 for LAS coordinates).

Writing: .ply, .pcd and .las write ``x`` as 8-bit (LAS: 16-bit) colours when it looks like
colours (3 channels in ``[0, 1]``; see ``x_as``), otherwise as feature properties. For
.las, the first three of six or more channels in ``[0, 1]`` are colours too (the layout
reading a colour LAS file gives); ``x_as="feature"`` keeps every channel a feature. .npz
and .h5 store every tensor attribute losslessly. Writes are atomic: the data goes to a
temporary file in the same folder that then replaces ``path``.

Unreadable, truncated or malformed files raise ``ValueError`` naming the file and the
problem; a missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import io as _io
import os
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_path
from ._color import split_color
from .las import read_las, write_las
from .pcd import read_pcd, write_pcd
from .ply import PointArrays, read_ply, write_ply
from .point_set import PointSet

SUFFIXES = (".ply", ".pcd", ".las", ".laz", ".xyz", ".npy", ".npz", ".h5")

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip


def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """``path`` as a string if it is an existing regular file.

    Raises:
        IsADirectoryError: ``path`` is a folder ("... is a folder, not a file").
        FileNotFoundError: nothing exists at ``path``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def _check_magic(path: str, magics: tuple[bytes, ...], what: str) -> None:
    """Raise ``ValueError`` unless the file starts with one of ``magics``."""
    with open(path, "rb") as f:
        head = f.read(max(len(m) for m in magics))
    if not any(head.startswith(m) for m in magics):
        raise ValueError(f"{path}: not {what} (it starts with {head!r}, expected {magics[0]!r})")


#: Attributes that describe how a PyG Batch was collated; they are not written.
_SKIP_KEYS = ("ptr",)


def _suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".hdf5":
        suffix = ".h5"
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}; supported: {', '.join(SUFFIXES)}, .hdf5"
        )
    return suffix


def _float_dtype(arr: np.ndarray, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.float64 if arr.dtype == np.float64 else torch.float32


# -- reading ---------------------------------------------------------------------------


def _from_arrays(arrays: PointArrays, dtype: torch.dtype | None) -> PointSet:
    pos = arrays.pos
    keep = np.isfinite(pos).all(axis=1)
    if not keep.all():
        pos = pos[keep]
    pdtype = _float_dtype(pos, dtype)
    parts = []
    if arrays.color is not None:
        color = arrays.color[keep]
        if color.dtype.kind in "iu":
            scale = float(np.iinfo(color.dtype).max)
            parts.append(torch.from_numpy(color.astype(np.float64) / scale))
        else:
            parts.append(torch.from_numpy(color.astype(np.float64)))
    if arrays.features is not None:
        parts.append(torch.from_numpy(arrays.features[keep].astype(np.float64)))
    attrs: dict[str, Any] = {"pos": torch.from_numpy(np.ascontiguousarray(pos)).to(pdtype)}
    if parts:
        attrs["x"] = torch.cat(parts, dim=1).to(pdtype if dtype is None else dtype)
    if arrays.normal is not None:
        attrs["normal"] = torch.from_numpy(np.ascontiguousarray(arrays.normal[keep])).to(pdtype)
    return PointSet(**attrs)


def _read_table(arr: np.ndarray, path: str, pos_dim: int, dtype: torch.dtype | None) -> PointSet:
    if arr.ndim != 2 or arr.shape[1] < pos_dim:
        raise ValueError(f"{path}: expected an array of shape [N, {pos_dim} + C], got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    fdtype = _float_dtype(arr, dtype)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(fdtype)
    x = t[:, pos_dim:] if arr.shape[1] > pos_dim else None
    return PointSet(x=x, pos=t[:, :pos_dim].contiguous())


def _read_xyz(path: str, pos_dim: int, dtype: torch.dtype | None) -> PointSet:
    try:
        arr = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a whitespace-separated numeric table ({exc})") from exc
    if arr.size == 0:
        arr = arr.reshape(0, pos_dim)
    arr = arr[np.isfinite(arr[:, :pos_dim]).all(axis=1)] if arr.shape[1] >= pos_dim else arr
    return _read_table(arr, path, pos_dim, dtype if dtype is not None else torch.float32)


def _attrs_to_point_set(
    arrays: dict[str, np.ndarray], path: str, dtype: torch.dtype | None
) -> PointSet:
    if "pos" not in arrays:
        raise ValueError(f"{path}: no 'pos' array; found keys {sorted(arrays)}")
    attrs: dict[str, Any] = {}
    for key, arr in arrays.items():
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{path}: array {key!r} has unsupported dtype {arr.dtype}")
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype == np.uint16 or arr.dtype == np.uint32:
            arr = arr.astype(np.int64)
        t = torch.from_numpy(np.array(arr, copy=True))
        if key in ("pos", "x") and dtype is not None:
            t = t.to(dtype)
        elif key == "pos" and not t.is_floating_point():
            t = t.to(torch.float32)
        attrs[key] = t
    try:
        return PointSet(**attrs)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _read_npz(path: str, dtype: torch.dtype | None) -> PointSet:
    _check_magic(path, _ZIP_MAGICS, "an .npz archive (a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable .npz file ({exc})") from exc
    return _attrs_to_point_set(arrays, path, dtype)


def _read_npy(path: str, pos_dim: int, dtype: torch.dtype | None) -> PointSet:
    _check_magic(path, (_NPY_MAGIC,), "an .npy array file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable .npy file ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: not an .npy array")
    return _read_table(arr, path, pos_dim, dtype)


def _read_h5(path: str, dtype: torch.dtype | None) -> PointSet:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays = {}
            for key, item in f.items():
                if isinstance(item, h5py.Dataset):
                    arrays[key] = np.asarray(item[()])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable HDF5 file ({exc})") from exc
    return _attrs_to_point_set(arrays, path, dtype)


def read(path: str | os.PathLike, dtype: torch.dtype | None = None, pos_dim: int = 3) -> PointSet:
    """Read a point set from ``path`` (format by suffix; see the module docstring).

    Args:
        path: file to read.
        dtype: floating dtype of ``pos``, ``x`` and ``normal``; ``None`` keeps the file's
            precision (float32 for integer data).
        pos_dim: leading columns that are positions, for .npy and .xyz tables.
    """
    path = os.fspath(path)
    suffix = _suffix(path)
    require_file(path)
    if suffix == ".ply":
        return _from_arrays(read_ply(path), dtype)
    if suffix == ".pcd":
        return _from_arrays(read_pcd(path), dtype)
    if suffix in (".las", ".laz"):
        return _from_arrays(read_las(path), dtype)
    if suffix == ".xyz":
        return _read_xyz(path, pos_dim, dtype)
    if suffix == ".npy":
        return _read_npy(path, pos_dim, dtype)
    if suffix == ".npz":
        return _read_npz(path, dtype)
    return _read_h5(path, dtype)


# -- writing ---------------------------------------------------------------------------


def _atomic_write(path: str, writer: Callable[[BinaryIO], None]) -> None:
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _single_cloud(points: PointSet, path: str) -> None:
    if points.num_clouds != 1:
        raise ValueError(
            f"{path}: this format holds one cloud but the point set has {points.num_clouds}; "
            "write each of points.clouds() separately, or use .npz/.h5"
        )


def _split_las_x(x: Tensor | None, x_as: str) -> tuple[Tensor | None, Tensor | None]:
    """``(colors, features)`` of ``x`` in the layout LAS reading gives: colours, then fields.

    Beyond :func:`split_color`'s rules, the first three of more channels are colours with
    ``x_as="color"``, and with ``"auto"`` when there are at least six and the three are in
    ``[0, 1]`` (a colour LAS file read back: ``r g b intensity return_number classification``).
    """
    if x is not None and x.dim() == 2 and x.size(1) > 3 and x_as in ("auto", "color"):
        head = x[:, :3]
        unit = x.is_floating_point() and bool(((head >= 0) & (head <= 1)).all())
        if x_as == "color" or (unit and x.size(1) >= 6):
            return split_color(head, "color")[0], x[:, 3:]
    return split_color(x, x_as)


def _write_geometry(
    path: str, points: PointSet, suffix: str, x_as: str, binary: bool, compress: bool = False
) -> None:
    _single_cloud(points, path)
    if points.pos.size(1) != 3:
        raise ValueError(f"{path}: {suffix} stores 3-D points, got pos {tuple(points.pos.shape)}")
    las = suffix in (".las", ".laz")
    color, features = (_split_las_x if las else split_color)(points.x, x_as)
    normal = points.get("normal")
    if normal is not None and (not isinstance(normal, Tensor) or normal.shape != points.pos.shape):
        raise ValueError(
            f"normal must have the shape of pos {tuple(points.pos.shape)}, got "
            f"{getattr(normal, 'shape', type(normal).__name__)}"
        )
    if las and not binary:
        raise ValueError(f"{path}: {suffix} files are binary only; got binary=False")
    top, int_dtype = (65535.0, torch.int32) if las else (255.0, torch.uint8)
    arrays = {
        "pos": _numpy(points.pos),
        "normal": _numpy(normal) if normal is not None else None,
        "color": _numpy((color * top).round().to(int_dtype)) if color is not None else None,
        "features": _numpy(features) if features is not None else None,
    }
    if las:
        if arrays["color"] is not None:
            arrays["color"] = arrays["color"].astype(np.uint16)
        _atomic_write(path, lambda f: write_las(f, path, **arrays))
        return
    if suffix == ".ply":
        _atomic_write(path, lambda f: write_ply(f, binary=binary, **arrays))
    else:
        _atomic_write(path, lambda f: write_pcd(f, binary=binary, compressed=compress, **arrays))


def _table(points: PointSet, path: str) -> np.ndarray:
    _single_cloud(points, path)
    cols = [points.pos]
    if points.x is not None:
        cols.append(points.x.to(points.pos.dtype))
    return _numpy(torch.cat(cols, dim=1))


def _attributes(points: PointSet, path: str) -> dict[str, np.ndarray]:
    out = {}
    for key, value in points.items():
        if key in _SKIP_KEYS:
            continue
        if isinstance(value, Tensor):
            out[key] = _numpy(value)
        elif isinstance(value, (bool, int, float)):
            out[key] = np.asarray(value)
        else:
            raise ValueError(
                f"{path}: attribute {key!r} of type {type(value).__name__} cannot be stored; "
                "only tensors and numbers can"
            )
    return out


def write(
    path: str | os.PathLike,
    points: PointSet,
    x_as: str = "auto",
    binary: bool = True,
    compress: bool = False,
) -> None:
    """Write ``points`` to ``path`` atomically (format by suffix; see the module docstring).

    Args:
        path: destination; its folder must exist.
        points: the point set (one cloud, except for .npz and .h5).
        x_as: for .ply/.pcd/.las/.laz, how ``x`` is stored: ``"auto"`` (8-bit colours when ``x`` is
            ``[N, 3]`` in ``[0, 1]``, else float features), ``"color"``, ``"feature"`` or
            ``"none"`` (not stored).
        binary: binary rather than ASCII .ply/.pcd (.las/.laz are binary only).
        compress: LZF-compressed .pcd (``DATA binary_compressed``, as PCL writes it); other
            formats refuse it (.laz is compressed by its suffix).
    """
    path = os.fspath(path)
    suffix = _suffix(path)
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    points.validate()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder {folder} does not exist")
    if compress and suffix != ".pcd":
        raise ValueError(f"{path}: compress=True is for .pcd files, not {suffix}")
    if suffix in (".ply", ".pcd", ".las", ".laz"):
        _write_geometry(path, points, suffix, x_as, binary, compress)
    elif suffix == ".xyz":
        table = _table(points, path)
        fmt = "%.17g" if table.dtype == np.float64 else "%.9g"
        _atomic_write(path, lambda f: np.savetxt(f, table, fmt=fmt))
    elif suffix == ".npy":
        table = _table(points, path)
        _atomic_write(path, lambda f: np.save(f, table, allow_pickle=False))
    elif suffix == ".npz":
        arrays = _attributes(points, path)
        _atomic_write(path, lambda f: np.savez(f, **arrays))
    else:
        import h5py

        arrays = _attributes(points, path)

        def write_h5(f: BinaryIO) -> None:
            buf = _io.BytesIO()
            with h5py.File(buf, "w") as h5:
                for key, arr in arrays.items():
                    h5.create_dataset(key, data=arr)
            f.write(buf.getvalue())

        _atomic_write(path, write_h5)
