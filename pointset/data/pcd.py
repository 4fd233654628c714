"""A small PCD (Point Cloud Library format) reader and writer, numpy only.

Reads ``ascii``, ``binary`` and ``binary_compressed`` data (LZF, decoded by the ``lzf``
module of python-neo-lzf; each field's values are stored together, point by point). Fields map to point
attributes: ``x y z`` -> positions, ``normal_x normal_y normal_z`` -> normals, ``rgb`` /
``rgba`` (packed ``0x(AA)RRGGBB`` in a 4-byte field) -> colours, padding fields ``_`` are
skipped and every other field (``count`` columns each) -> feature columns, in file order.
Writes ``ascii``, ``binary`` or ``binary_compressed``.
"""

from __future__ import annotations

from typing import BinaryIO

import lzf
import numpy as np

from .ply import PointArrays

_NORMAL = ("normal_x", "normal_y", "normal_z")
_KINDS = {"F": "f", "I": "i", "U": "u"}


def _lzf_decompress(src: bytes, size: int, path: str) -> bytes:
    """Decompress the LZF block of a ``binary_compressed`` file to exactly ``size`` bytes."""
    try:
        out = lzf.decompress(src, size) if size else b""
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt binary_compressed PCD data ({exc})") from exc
    if out is None or len(out) != size:
        got = "more" if out is None else len(out)
        raise ValueError(
            f"{path}: binary_compressed PCD data decompressed to {got} of {size} bytes"
        )
    return out


def _lzf_block(raw: bytes) -> bytes:
    """``raw`` as a ``binary_compressed`` data block: compressed size, raw size (both
    little-endian uint32), then the LZF bytes."""
    if not raw:
        return np.array([0, 0], "<u4").tobytes()
    if len(raw) >= 2**32:
        raise ValueError(
            f"a compressed PCD block holds under 4 GiB; these points take {len(raw)} bytes"
        )
    # LZF grows incompressible input by at most one byte in 32, plus a little
    packed = lzf.compress(raw, len(raw) + len(raw) // 32 + 64)
    return np.array([len(packed), len(raw)], "<u4").tobytes() + packed


def _parse_header(data: bytes, path: str) -> tuple[dict[str, list[str]], int]:
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise ValueError(f"{path}: PCD header has no DATA line")
        raw = data[pos:nl]
        pos = nl + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a PCD file (header is not ASCII text)") from exc
        if not line or line.startswith("#"):
            continue
        words = line.split()
        header[words[0].upper()] = words[1:]
        if words[0].upper() == "DATA":
            return header, pos


def read_pcd(path: str) -> PointArrays:
    """Read a PCD file. Raises ``ValueError`` naming the file and the problem."""
    with open(path, "rb") as f:
        data = f.read()
    header, offset = _parse_header(data, path)
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in header:
            raise ValueError(f"{path}: PCD header has no {key} line")
    names = header["FIELDS"]
    try:
        sizes = [int(s) for s in header["SIZE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        width = int(header.get("WIDTH", ["0"])[0])
        height = int(header.get("HEIGHT", ["1"])[0])
        num = int(header.get("POINTS", [str(width * height)])[0])
        dtypes = [np.dtype(f"<{_KINDS[t]}{s}") for t, s in zip(header["TYPE"], sizes)]
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: bad PCD header ({exc})") from exc
    for key, value in (("POINTS", num), ("WIDTH", width), ("HEIGHT", height)):
        if value < 0:
            raise ValueError(f"{path}: bad PCD header: {key} is negative ({value})")
    for name, c in zip(names, counts):
        if c < 1:
            raise ValueError(f"{path}: bad PCD header: COUNT of field {name!r} is {c}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{path}: bad PCD header: SIZE must be >= 1, got {sizes}")
    if not (len(names) == len(sizes) == len(counts) == len(dtypes)):
        raise ValueError(
            f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ: "
            f"{len(names)}/{len(sizes)}/{len(dtypes)}/{len(counts)}"
        )
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise ValueError(f"{path}: PCD file has no {axis!r} field (has {names})")
    keys = [n if n != "_" else f"_pad{i}" for i, n in enumerate(names)]
    mode = header["DATA"][0].lower() if header["DATA"] else ""
    columns: dict[str, np.ndarray] = {}
    if mode == "ascii":
        text = data[offset:].split()
        total = sum(counts)
        if len(text) < num * total:
            raise ValueError(
                f"{path}: PCD file is truncated: {num} points x {total} values declared, "
                f"{len(text)} values present"
            )
        table = np.array(text[: num * total], dtype=np.float64).reshape(num, total)
        col = 0
        for key, dt, c in zip(keys, dtypes, counts):
            part = table[:, col : col + c]
            if key in ("rgb", "rgba") and dt.kind == "f":
                part = part.astype(np.float32)  # packed colour: keep the float's bits
            columns[key] = part.astype(dt) if c > 1 else part[:, 0].astype(dt)
            col += c
    elif mode in ("binary", "binary_compressed"):
        rec_dt = np.dtype(
            [(k, dt, (c,)) if c > 1 else (k, dt) for k, dt, c in zip(keys, dtypes, counts)]
        )
        if mode == "binary":
            need = rec_dt.itemsize * num
            if len(data) - offset < need:
                raise ValueError(
                    f"{path}: PCD file is truncated: {num} points need {need} bytes, "
                    f"{len(data) - offset} present"
                )
            rec = np.frombuffer(data, rec_dt, num, offset)
            columns = {k: np.array(rec[k]) for k in keys}
        else:
            if len(data) - offset < 8:
                raise ValueError(f"{path}: PCD file is truncated before the compressed sizes")
            csize, usize = (int(v) for v in np.frombuffer(data, "<u4", 2, offset))
            if len(data) - offset - 8 < csize:
                raise ValueError(
                    f"{path}: PCD file is truncated: {csize} compressed bytes declared, "
                    f"{len(data) - offset - 8} present"
                )
            raw = _lzf_decompress(data[offset + 8 : offset + 8 + csize], usize, path)
            start = 0
            for k, dt, c in zip(keys, dtypes, counts):
                nbytes = dt.itemsize * c * num
                if start + nbytes > len(raw):
                    raise ValueError(f"{path}: binary_compressed PCD data is too short")
                arr = np.frombuffer(raw, dt, c * num, start)
                columns[k] = arr.reshape(num, c) if c > 1 else arr.copy()
                start += nbytes
    else:
        raise ValueError(f"{path}: unknown PCD DATA mode {mode!r}")

    pos = np.stack([columns[a] for a in ("x", "y", "z")], axis=1)
    out = PointArrays(pos=pos)
    used = {"x", "y", "z"}
    if all(n in columns for n in _NORMAL):
        out.normal = np.stack([columns[a] for a in _NORMAL], axis=1)
        used |= set(_NORMAL)
    for key in ("rgb", "rgba"):
        if key in columns and columns[key].ndim == 1 and columns[key].dtype.itemsize == 4:
            packed = columns[key].view(np.uint32)
            out.color = np.stack(
                [(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1
            ).astype(np.uint8)
            used.add(key)
            break
    extra = [k for k in keys if k not in used and not k.startswith("_pad")]
    if extra:
        parts = [columns[k].reshape(num, -1).astype(np.float64) for k in extra]
        out.features = np.concatenate(parts, axis=1)
        out.feature_names = extra
    return out


def write_pcd(
    f: BinaryIO,
    pos: np.ndarray,
    normal: np.ndarray | None = None,
    color: np.ndarray | None = None,
    features: np.ndarray | None = None,
    binary: bool = True,
    compressed: bool = False,
) -> None:
    """Write points to an open binary file (``color [N, 3]`` uint8 packed into ``rgb``);
    ``compressed``: ``binary_compressed`` data (needs ``binary``)."""
    if compressed and not binary:
        raise ValueError("a compressed PCD file is binary; got binary=False")
    n = pos.shape[0]
    cols: list[tuple[str, np.ndarray]] = []

    def ftype(a: np.ndarray) -> np.dtype:
        return np.dtype("<f8") if a.dtype == np.float64 else np.dtype("<f4")

    for i, name in enumerate(("x", "y", "z")):
        cols.append((name, pos[:, i].astype(ftype(pos), copy=False)))
    if normal is not None:
        for i, name in enumerate(_NORMAL):
            cols.append((name, normal[:, i].astype(ftype(normal), copy=False)))
    if color is not None:
        c = color.astype(np.uint32)
        packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        # binary: PCL's packed float; ascii: the integer, which prints exactly
        packed = packed.astype("<u4")
        cols.append(("rgb", packed.view("<f4") if binary else packed))
    if features is not None:
        for i in range(features.shape[1]):
            cols.append((f"feat_{i}", features[:, i].astype(ftype(features), copy=False)))
    header = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(name for name, _ in cols),
        "SIZE " + " ".join(str(c.dtype.itemsize) for _, c in cols),
        "TYPE " + " ".join("U" if c.dtype.kind == "u" else "F" for _, c in cols),
        "COUNT " + " ".join("1" for _ in cols),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {'binary_compressed' if compressed else 'binary' if binary else 'ascii'}",
    ]
    f.write(("\n".join(header) + "\n").encode("ascii"))
    if compressed:
        f.write(_lzf_block(b"".join(c.tobytes() for _, c in cols)))
        return
    rec = np.empty(n, dtype=[(name, c.dtype) for name, c in cols])
    for name, c in cols:
        rec[name] = c
    if binary:
        f.write(memoryview(rec.view(np.uint8)))  # no copy of the records
    elif n:
        fmts = [
            "%d" if c.dtype.kind == "u" else ("%.17g" if c.dtype.itemsize == 8 else "%.9g")
            for _, c in cols
        ]
        np.savetxt(f, rec, fmt=" ".join(fmts))
