"""A small PLY reader and writer (ascii, binary little- and big-endian), numpy only.

Only the ``vertex`` element is returned; other elements (faces, edges) and list properties
of the vertices are skipped.
Vertex properties map to point attributes as follows: ``x y z`` -> positions,
``nx ny nz`` -> normals, ``red green blue`` -> colours (``alpha`` is ignored), every
other scalar property -> a feature column, in file order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip

_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}

POSITION = ("x", "y", "z")
NORMAL = ("nx", "ny", "nz")
COLOR = ("red", "green", "blue")
IGNORED = ("alpha",)


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str, str | None]] = field(default_factory=list)
    # (name, value type, list count type or None)


@dataclass
class PointArrays:
    """Arrays read from a point file: ``pos [N, 3]`` and optional parts (``None`` if absent)."""

    pos: np.ndarray
    normal: np.ndarray | None = None
    color: np.ndarray | None = None
    features: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)


def _parse_header(data: bytes, path: str) -> tuple[str, list[_Element], int]:
    if not data.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: PLY header has no 'end_header' line")
    body = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: PLY header is not ASCII text") from exc
    fmt = None
    elements: list[_Element] = []
    for number, raw in enumerate(lines[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
                if fmt not in _FORMATS:
                    raise ValueError(f"unknown format {fmt!r}")
            elif words[0] == "element":
                count = int(words[2])
                if count < 0:
                    raise ValueError(f"negative element count {count}")
                elements.append(_Element(words[1], count))
            elif words[0] == "property":
                if not elements:
                    raise ValueError("property before any element")
                if words[1] == "list":
                    elements[-1].props.append((words[4], _TYPES[words[3]], _TYPES[words[2]]))
                else:
                    elements[-1].props.append((words[2], _TYPES[words[1]], None))
            else:
                raise ValueError(f"unknown keyword {words[0]!r}")
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: bad PLY header line {number}: {raw!r} ({exc})") from exc
    if fmt is None:
        raise ValueError(f"{path}: PLY header has no 'format' line")
    return fmt, elements, body


def _walk_binary_rows(
    data: bytes,
    offset: int,
    el: _Element,
    order: str,
    path: str,
    starts: dict[str, list[int]] | None = None,
) -> int:
    """Byte offset after an element with list properties, walked row by row; the offset of
    every scalar value is appended to ``starts[name]`` when ``starts`` is given."""
    for _ in range(el.count):
        for name, vtype, ctype in el.props:
            if ctype is None:
                if starts is not None:
                    starts[name].append(offset)
                offset += np.dtype(vtype).itemsize
                continue
            cdt = np.dtype(order + ctype)
            if offset + cdt.itemsize > len(data):
                raise ValueError(f"{path}: PLY file is truncated inside element {el.name!r}")
            n = int(np.frombuffer(data, cdt, 1, offset)[0])
            offset += cdt.itemsize + n * np.dtype(vtype).itemsize
    if offset > len(data):
        raise ValueError(f"{path}: PLY file is truncated inside element {el.name!r}")
    return offset


def _binary_list_vertices(
    data: bytes, offset: int, el: _Element, order: str, path: str
) -> dict[str, np.ndarray]:
    """Scalar columns of a binary vertex element that also has list properties."""
    starts: dict[str, list[int]] = {name: [] for name, _, ctype in el.props if ctype is None}
    _walk_binary_rows(data, offset, el, order, path, starts)
    buf = np.frombuffer(data, np.uint8)
    columns = {}
    for name, vtype, ctype in el.props:
        if ctype is None:
            dt = np.dtype(order + vtype)
            index = np.asarray(starts[name], np.int64)[:, None] + np.arange(dt.itemsize)
            columns[name] = buf[index].reshape(-1).view(dt).astype(dt.newbyteorder("="))
    return columns


def _ascii_list_vertices(lines: list[bytes], el: _Element) -> np.ndarray:
    """``[N, scalars]`` values of ASCII vertex lines that also hold lists (skipped)."""
    rows = []
    for line in lines:
        words = line.split()
        values, i = [], 0
        for _name, _vtype, ctype in el.props:
            if ctype is None:
                values.append(words[i])
                i += 1
            else:
                i += 1 + int(words[i])
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(len(lines), -1)


def _read_head(path: str, chunk: int = 1 << 16) -> bytes:
    """The file's first bytes, through the line that ends the header (or the whole file)."""
    head = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            head += block
            end = head.find(b"end_header")
            if not block or (end >= 0 and b"\n" in head[end:]):
                return head


def read_ply(path: str) -> PointArrays:
    """Read the vertices of a PLY file. Raises ``ValueError`` naming the file and problem."""
    fmt, elements, offset = _parse_header(_read_head(path), path)
    if fmt == "ascii":
        with open(path, "rb") as f:
            data = f.read()
    else:  # mapped, not read: only the vertex bytes are touched, and copied once
        data = np.memmap(path, np.uint8, mode="r")
    vertex = next((el for el in elements if el.name == "vertex"), None)
    if vertex is None:
        raise ValueError(f"{path}: PLY file has no 'vertex' element")
    has_lists = any(ctype is not None for _, _, ctype in vertex.props)
    scalars = [p for p in vertex.props if p[2] is None]
    names = [p[0] for p in scalars]
    for axis in POSITION:
        if axis not in names:
            raise ValueError(f"{path}: PLY vertex has no {axis!r} property (has {names})")

    if fmt == "ascii":
        lines = data[offset:].splitlines()
        row = 0
        table = None
        for el in elements:
            if el is vertex:
                chunk = lines[row : row + el.count]
                if len(chunk) < el.count:
                    raise ValueError(
                        f"{path}: PLY file is truncated: {el.count} vertices declared, "
                        f"{len(chunk)} lines present"
                    )
                try:
                    if has_lists:
                        table = _ascii_list_vertices(chunk, el)
                    else:
                        values = np.array(b" ".join(chunk).split(), dtype=np.float64)
                        table = values.reshape(el.count, len(el.props))
                except (IndexError, ValueError) as exc:
                    raise ValueError(f"{path}: bad vertex data in ASCII PLY ({exc})") from exc
                break
            row += el.count
        columns = {name: table[:, i].astype(vtype) for i, (name, vtype, _) in enumerate(scalars)}
    else:
        order = _FORMATS[fmt]
        columns = {}
        for el in elements:
            if el is vertex and has_lists:
                columns = _binary_list_vertices(data, offset, el, order, path)
                break
            if el is vertex:
                dt = np.dtype([(name, order + vtype) for name, vtype, _ in el.props])
                need = dt.itemsize * el.count
                if len(data) - offset < need:
                    raise ValueError(
                        f"{path}: PLY file is truncated: {el.count} vertices need {need} bytes, "
                        f"{len(data) - offset} present"
                    )
                rec = np.frombuffer(data, dt, el.count, offset)
                columns = {
                    name: rec[name].astype(rec[name].dtype.newbyteorder("="), copy=False)
                    for name in dt.names
                }
                break
            if any(ctype is not None for _, _, ctype in el.props):
                offset = _walk_binary_rows(data, offset, el, order, path)
            else:
                offset += np.dtype([(n, order + t) for n, t, _ in el.props]).itemsize * el.count
    return _to_arrays(columns, names)


def _to_arrays(columns: dict[str, np.ndarray], names: list[str]) -> PointArrays:
    pos = np.stack([columns[a] for a in POSITION], axis=1)
    out = PointArrays(pos=pos)
    if all(n in columns for n in NORMAL):
        out.normal = np.stack([columns[a] for a in NORMAL], axis=1)
    if all(n in columns for n in COLOR):
        out.color = np.stack([columns[a] for a in COLOR], axis=1)
    used = set(POSITION) | set(IGNORED)
    if out.normal is not None:
        used |= set(NORMAL)
    if out.color is not None:
        used |= set(COLOR)
    extra = [n for n in names if n not in used]
    if extra:
        out.features = np.stack([columns[n].astype(np.float64) for n in extra], axis=1)
        out.feature_names = extra
    return out


def write_ply(
    f: BinaryIO,
    pos: np.ndarray,
    normal: np.ndarray | None = None,
    color: np.ndarray | None = None,
    features: np.ndarray | None = None,
    binary: bool = True,
) -> None:
    """Write points to an open binary file.

    ``pos [N, 3]`` float32/float64 (written as ``float``/``double``), ``normal [N, 3]``,
    ``color [N, 3]`` uint8, ``features [N, C]`` written as ``float`` properties
    ``feat_0 ...`` (``double`` when float64).
    """
    n = pos.shape[0]
    cols: list[tuple[str, np.ndarray]] = []

    def ftype(a: np.ndarray) -> np.dtype:
        return np.dtype("f8") if a.dtype == np.float64 else np.dtype("f4")

    for i, name in enumerate(POSITION):
        cols.append((name, pos[:, i].astype(ftype(pos), copy=False)))
    if normal is not None:
        for i, name in enumerate(NORMAL):
            cols.append((name, normal[:, i].astype(ftype(normal), copy=False)))
    if color is not None:
        for i, name in enumerate(COLOR):
            cols.append((name, color[:, i].astype(np.uint8, copy=False)))
    if features is not None:
        for i in range(features.shape[1]):
            cols.append((f"feat_{i}", features[:, i].astype(ftype(features), copy=False)))
    ply_type = {"f4": "float", "f8": "double", "u1": "uchar"}
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header.append(f"element vertex {n}")
    header += [f"property {ply_type[c.dtype.str[1:]]} {name}" for name, c in cols]
    header.append("end_header")
    f.write(("\n".join(header) + "\n").encode("ascii"))
    rec = np.empty(n, dtype=[(name, "<" + c.dtype.str[1:]) for name, c in cols])
    for name, c in cols:
        rec[name] = c
    if binary:
        f.write(memoryview(rec.view(np.uint8)))  # no copy of the records
    elif n:
        fmts = [
            "%d" if c.dtype == np.uint8 else ("%.17g" if c.dtype == np.float64 else "%.9g")
            for _, c in cols
        ]
        np.savetxt(f, rec, fmt=" ".join(fmts))
