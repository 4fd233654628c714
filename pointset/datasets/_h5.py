"""HDF5 point-cloud files: reading with one-line errors, checking, writing.

The ScanObjectNN and ModelNet40 releases store a split as ``data [N, P, 3]`` float32 and
``label [N]`` (or ``[N, 1]``) small integers; ScanObjectNN adds ``mask [N, P]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from .errors import DatasetError


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_h5(
    path: str | os.PathLike,
    required: Iterable[str] = ("data", "label"),
    optional: Iterable[str] = (),
) -> dict[str, np.ndarray]:
    """Read whole datasets from an HDF5 file into memory.

    Raises:
        DatasetError: the file is missing, is not a readable HDF5 file (truncated or
            corrupt), or lacks one of the ``required`` keys (``optional`` ones may be absent).
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not an HDF5 file")
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    required, optional = list(required), list(optional)
    try:
        with h5py.File(path, "r") as f:
            keys = sorted(f.keys())
            missing = [k for k in required if k not in f]
            if missing:
                raise DatasetError(
                    f"{path} has no '{missing[0]}' dataset (found keys: "
                    f"{', '.join(keys) or 'none'}; expected {', '.join(required)})"
                )
            return {k: f[k][()] for k in required + [k for k in optional if k in f]}
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(
            f"{path} is not a readable HDF5 file (truncated or corrupt?): {_first_line(exc)}"
        ) from exc


def read_attrs(path: str | os.PathLike) -> dict[str, str]:
    """The file-level attributes of an HDF5 file as strings; ``{}`` if it cannot be read."""
    try:
        with h5py.File(path, "r") as f:
            return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in f.attrs.items()}
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def write_h5(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict[str, str] | None = None
) -> None:
    """Write ``arrays`` as uncompressed datasets (as the public releases are stored)."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def check_clouds(
    arrays: dict[str, np.ndarray], path: str | os.PathLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check ``data`` and ``label`` read from ``path`` and return them normalised.

    Returns:
        ``data [N, P, 3]`` float32 and ``label [N]`` int64.

    Raises:
        DatasetError: ``data`` not ``[N, P, 3]`` floating or not finite, ``label`` not
            ``[N]``/``[N, 1]`` integers of the same ``N``, or a label outside
            ``[0, num_classes)``.
    """
    data, label = np.asarray(arrays["data"]), np.asarray(arrays["label"])
    if data.ndim != 3 or data.shape[2] != 3 or data.shape[0] == 0 or data.shape[1] == 0:
        raise DatasetError(f"{path}: 'data' must have shape [N, P, 3], got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise DatasetError(f"{path}: 'data' must be floating point, got dtype {data.dtype}")
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or label.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: 'label' must have shape [{data.shape[0]}] (one per cloud in 'data' "
            f"{data.shape}), got {label.shape}"
        )
    integral = np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and np.all(label == np.round(label))
    )
    if not integral:
        raise DatasetError(f"{path}: 'label' must hold integers, got dtype {label.dtype}")
    label = label.astype(np.int64)
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: label {int(label[i])} of cloud {i} is out of range [0, {num_classes}) "
            f"({int(bad.sum())} bad labels in all)"
        )
    data = data.astype(np.float32, copy=False)
    finite = np.isfinite(data).all(axis=(1, 2))
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise DatasetError(f"{path}: cloud {i} of 'data' contains NaN or inf")
    return data, label
