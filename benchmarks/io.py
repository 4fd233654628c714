"""Scan-file I/O: pointset's PLY/PCD readers and writers against plyfile and pypcd4.

Two tables:

- speed: read and write of a 2,000,000-point binary PLY (xyz + normals float32, rgb uchar,
  comments and obj_info; little-endian, big-endian, and little-endian followed by 2,000,000
  triangles to skip) and a binary_compressed PCD (xyz, packed rgb, intensity), the median
  of ``--repeats`` interleaved rounds with the min-max spread;
- completeness: small files written here byte by byte, each read by every candidate and
  compared with the values that went in (a row passes only when the values match).

Every candidate returns the same ``pointset.data.ply.PointArrays`` (positions, normals,
colours, feature columns), so the times include turning the library's records into what
``pointset.read`` needs; the arrays of every candidate are checked equal before timing.

    python benchmarks/io.py                 # 2M points, 5 rounds
    python benchmarks/io.py --points 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from pointset.data.pcd import read_pcd, write_pcd
from pointset.data.ply import PointArrays, read_ply, write_ply

POSITION, NORMAL, COLOR = ("x", "y", "z"), ("nx", "ny", "nz"), ("red", "green", "blue")
PLY_TYPES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int"}
PLY_TYPES.update({"u4": "uint", "f4": "float", "f8": "double"})
PCD_KIND = {"f": "F", "i": "I", "u": "U"}


# -- files written byte by byte --------------------------------------------------------


def scan(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An organized scan-like cloud: a room seen from its centre, row by row."""
    rng = np.random.default_rng(seed)
    w = 2000
    h = -(-n // w)
    az, el = np.meshgrid(np.linspace(-np.pi, np.pi, w), np.linspace(-0.5, 0.5, h))
    r = 4 + np.sin(3 * az) + 0.5 * np.cos(5 * el) + rng.normal(0, 0.002, az.shape)
    pos = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], -1)
    pos = pos.reshape(-1, 3)[:n].astype(np.float32)
    normal = -pos / np.linalg.norm(pos, axis=1, keepdims=True)
    color = np.stack([128 + 100 * np.sin(7 * az), 128 + 60 * np.cos(3 * el), 90 + 0 * az], -1)
    color = color.reshape(-1, 3)[:n].astype(np.uint8)
    intensity = np.round(100 * (1 + np.cos(2 * az))).reshape(-1)[:n].astype(np.float32)
    return {"pos": pos, "normal": normal.astype(np.float32), "color": color, "intensity": intensity}


def ply_bytes(
    columns: list[tuple[str, np.ndarray]],
    fmt: str = "binary_little_endian",
    faces: np.ndarray | None = None,
    faces_first: bool = False,
    vertex_lists: list[tuple[str, str, list[np.ndarray]]] = (),
) -> bytes:
    """A PLY file: comments, obj_info, a vertex element, optionally a face element.

    ``vertex_lists``: list properties of the vertices, ``(name, element type, rows)``.
    """
    order = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "<"}[fmt]
    n = len(columns[0][1])
    vhead = [f"element vertex {n}"] + [
        f"property {PLY_TYPES[c.dtype.str[1:]]} {k}" for k, c in columns
    ]
    vhead += [f"property list uchar {PLY_TYPES[t]} {k}" for k, t, _ in vertex_lists]
    fhead = (
        []
        if faces is None
        else [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    )
    head = ["ply", f"format {fmt} 1.0", "comment made by benchmarks/io.py", "obj_info scan 1"]
    head += (fhead + vhead) if faces_first else (vhead + fhead)
    out = io.BytesIO()
    out.write(("\n".join([*head, "end_header"]) + "\n").encode())

    def vertex_block() -> None:
        if fmt == "ascii":
            for i in range(n):
                row = [str(c[i].item()) for _, c in columns]
                for _, _, v in vertex_lists:
                    row += [str(len(v[i]))] + [str(e.item()) for e in v[i]]
                out.write((" ".join(row) + "\n").encode())
            return
        if vertex_lists:
            for i in range(n):
                for _, c in columns:
                    out.write(c[i : i + 1].astype(order + c.dtype.str[1:]).tobytes())
                for _, t, v in vertex_lists:
                    out.write(bytes([len(v[i])]) + v[i].astype(order + t).tobytes())
            return
        rec = np.empty(n, [(k, order + c.dtype.str[1:]) for k, c in columns])
        for k, c in columns:
            rec[k] = c
        out.write(rec.tobytes())

    def face_block() -> None:
        if fmt == "ascii":
            out.write(b"".join(b"3 %d %d %d\n" % tuple(f) for f in faces))
            return
        rec = np.empty(len(faces), [("n", "u1"), ("v", order + "i4", (3,))])
        rec["n"], rec["v"] = 3, faces
        out.write(rec.tobytes())

    blocks = [vertex_block] + ([face_block] if faces is not None else [])
    for block in reversed(blocks) if faces_first else blocks:
        block()
    return out.getvalue()


def scan_ply(cloud: dict[str, np.ndarray], fmt: str, faces: bool) -> bytes:
    cols = [(k, cloud["pos"][:, i]) for i, k in enumerate(POSITION)]
    cols += [(k, cloud["normal"][:, i]) for i, k in enumerate(NORMAL)]
    cols += [(k, cloud["color"][:, i]) for i, k in enumerate(COLOR)]
    n = len(cloud["pos"])
    tri = np.stack([np.arange(n), (np.arange(n) + 1) % n, (np.arange(n) + 2000) % n], 1)
    return ply_bytes(cols, fmt, tri.astype(np.int32) if faces else None)


def pcd_bytes(fields: list[tuple[str, np.ndarray]], mode: str) -> bytes:
    """A PCD v0.7 file; ``fields`` are ``(name, [N] or [N, count])``; ``_`` pads."""
    import lzf

    n = len(fields[0][1])
    cols = [(k, v.reshape(n, -1)) for k, v in fields]
    head = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(k for k, _ in cols),
        "SIZE " + " ".join(str(v.dtype.itemsize) for _, v in cols),
        "TYPE " + " ".join(PCD_KIND[v.dtype.kind] for _, v in cols),
        "COUNT " + " ".join(str(v.shape[1]) for _, v in cols),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {mode}",
    ]
    body: bytes
    if mode == "ascii":
        rows = [" ".join(str(e.item()) for _, v in cols for e in v[i]) for i in range(n)]
        body = ("\n".join(rows) + "\n").encode()
    elif mode == "binary":
        body = (
            b"".join(
                b"".join(v[i].astype("<" + v.dtype.str[1:]).tobytes() for _, v in cols)
                for i in range(n)
            )
            if n < 1000
            else np.concatenate(
                [v.astype("<" + v.dtype.str[1:]).view(np.uint8).reshape(n, -1) for _, v in cols], 1
            ).tobytes()
        )
    else:
        # PCL's layout: field after field, each point's ``count`` values together
        raw = b"".join(v.astype("<" + v.dtype.str[1:]).tobytes() for _, v in cols)
        comp = lzf.compress(raw, 2 * len(raw) + 16)
        body = np.array([len(comp), len(raw)], "<u4").tobytes() + comp
    return ("\n".join(head) + "\n").encode() + body


def packed_rgb(color: np.ndarray) -> np.ndarray:
    c = color.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype("<u4").view("<f4")


def scan_pcd(cloud: dict[str, np.ndarray]) -> bytes:
    fields = [(k, cloud["pos"][:, i]) for i, k in enumerate(POSITION)]
    fields += [("rgb", packed_rgb(cloud["color"])), ("intensity", cloud["intensity"])]
    return pcd_bytes(fields, "binary_compressed")


# -- the library candidates, returning what pointset.read needs ------------------------


def _native(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def _arrays(columns: dict[str, np.ndarray], names: list[str], normal, color) -> PointArrays:
    out = PointArrays(pos=np.stack([_native(columns[a]) for a in POSITION], 1))
    used = set(POSITION) | {"alpha"}
    if all(k in columns for k in normal):
        out.normal = np.stack([_native(columns[a]) for a in normal], 1)
        used |= set(normal)
    if color and all(k in columns for k in color):
        out.color = np.stack([_native(columns[a]) for a in color], 1)
        used |= set(color)
    extra = [k for k in names if k not in used and not k.startswith("_")]
    if extra:
        parts = [columns[k].reshape(len(out.pos), -1).astype(np.float64) for k in extra]
        out.features = np.concatenate(parts, 1)
        out.feature_names = extra
    return out


def plyfile_read(path: str) -> PointArrays:
    from plyfile import PlyData

    vertex = PlyData.read(path)["vertex"].data
    names = [k for k in vertex.dtype.names if vertex.dtype[k].kind != "O"]
    return _arrays({k: vertex[k] for k in names}, names, NORMAL, COLOR)


def plyfile_write(f, pos, normal=None, color=None, features=None, binary=True) -> None:
    from plyfile import PlyData, PlyElement

    cols = [(k, pos[:, i]) for i, k in enumerate(POSITION)]
    if normal is not None:
        cols += [(k, normal[:, i]) for i, k in enumerate(NORMAL)]
    if color is not None:
        cols += [(k, color[:, i]) for i, k in enumerate(COLOR)]
    if features is not None:
        cols += [(f"feat_{i}", features[:, i]) for i in range(features.shape[1])]
    rec = np.empty(len(pos), [(k, c.dtype) for k, c in cols])
    for k, c in cols:
        rec[k] = c
    PlyData([PlyElement.describe(rec, "vertex")], text=not binary, byte_order="<").write(f)


def pypcd4_read(path: str) -> PointArrays:
    from pypcd4 import PointCloud

    data = PointCloud.from_path(path).pc_data
    names = list(data.dtype.names)
    columns = {k: data[k] for k in names}
    for key in ("rgb", "rgba"):
        if key in columns and columns[key].ndim == 1 and columns[key].dtype.itemsize == 4:
            packed = columns.pop(key).view(np.uint32)
            rgb = [(packed >> s) & 0xFF for s in (16, 8, 0)]
            columns.update({k: v.astype(np.uint8) for k, v in zip(COLOR, rgb)})
            names = [n for n in names if n != key]
            break
    normal = ("normal_x", "normal_y", "normal_z")
    return _arrays(columns, names, normal, COLOR if "red" in columns else None)


def pypcd4_write(f, pos, normal=None, color=None, features=None, binary=True, compressed=False):
    from pypcd4 import Encoding, PointCloud

    arrays = [pos[:, i] for i in range(3)]
    names, types = list(POSITION), [pos.dtype] * 3
    if normal is not None:
        arrays += [normal[:, i] for i in range(3)]
        names += ["normal_x", "normal_y", "normal_z"]
        types += [normal.dtype] * 3
    if color is not None:
        arrays.append(packed_rgb(color))
        names.append("rgb")
        types.append(np.float32)
    if features is not None:
        arrays += [features[:, i] for i in range(features.shape[1])]
        names += [f"feat_{i}" for i in range(features.shape[1])]
        types += [features.dtype] * features.shape[1]
    mode = (
        Encoding.BINARY_COMPRESSED if compressed else Encoding.BINARY if binary else Encoding.ASCII
    )
    PointCloud.from_points(arrays, names, types).save(f, encoding=mode)


def pypcd4_write_compressed(f, **arrays) -> None:
    pypcd4_write(f, compressed=True, **arrays)


READERS = {"ply": {"pointset": read_ply, "plyfile": plyfile_read}}
READERS["pcd"] = {"pointset": read_pcd, "pypcd4": pypcd4_read}
WRITERS = {"ply": {"pointset": write_ply, "plyfile": plyfile_write}}
WRITERS["pcd"] = {"pointset": write_pcd, "pypcd4": pypcd4_write}


# -- completeness ----------------------------------------------------------------------


def _same(got: PointArrays, want: PointArrays) -> bool:
    for key in ("pos", "normal", "color", "features"):
        a, b = getattr(got, key), getattr(want, key)
        if (a is None) != (b is None):
            return False
        if a is not None and (
            a.shape != b.shape or not np.array_equal(a.astype(np.float64), b.astype(np.float64))
        ):
            return False
    return True


def completeness_cases() -> list[tuple[str, str, bytes, PointArrays]]:
    """(format, case, file bytes, expected arrays)."""
    rng = np.random.default_rng(1)
    n = 7
    pos = rng.normal(size=(n, 3)).astype(np.float32)
    xyz = [(k, pos[:, i]) for i, k in enumerate(POSITION)]
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    rgb_cols = [(k, color[:, i]) for i, k in enumerate(COLOR)]
    tri = rng.integers(0, n, (5, 3)).astype(np.int32)
    scalars = [
        (f"s_{t}", (rng.integers(0, 100, n) - (50 if t[0] == "i" else 0)).astype(t))
        for t in PLY_TYPES
    ]
    feats = np.stack([c.astype(np.float64) for _, c in scalars], 1)
    cases = [
        (
            "ply",
            "binary little-endian, colours",
            ply_bytes(xyz + rgb_cols),
            PointArrays(pos, color=color),
        ),
        (
            "ply",
            "binary big-endian",
            ply_bytes(xyz + rgb_cols, "binary_big_endian"),
            PointArrays(pos, color=color),
        ),
        ("ply", "ascii", ply_bytes(xyz + rgb_cols, "ascii"), PointArrays(pos, color=color)),
        ("ply", "all 8 scalar types", ply_bytes(xyz + scalars), PointArrays(pos, features=feats)),
        ("ply", "faces after vertices skipped", ply_bytes(xyz, faces=tri), PointArrays(pos)),
        (
            "ply",
            "faces before vertices skipped",
            ply_bytes(xyz, faces=tri, faces_first=True),
            PointArrays(pos),
        ),
        (
            "ply",
            "ascii, faces before vertices",
            ply_bytes(xyz, "ascii", faces=tri, faces_first=True),
            PointArrays(pos),
        ),
        (
            "ply",
            "list property on vertices (dropped)",
            ply_bytes(xyz, vertex_lists=[("ring", "i4", [np.arange(i % 3) for i in range(n)])]),
            PointArrays(pos),
        ),
    ]

    inten = rng.integers(0, 255, n).astype(np.float32)
    hist = rng.normal(size=(n, 4)).astype(np.float32)
    pad = np.zeros(n, np.float32)
    pcd_color = [("rgb", packed_rgb(color))]
    base = PointArrays(pos, color=color, features=inten[:, None].astype(np.float64))
    typed = [
        ("i8", rng.integers(-5, 5, n).astype(np.int8)),
        ("u16", rng.integers(0, 9, n).astype(np.uint16)),
        ("f64", rng.normal(size=n)),
    ]
    for mode in ("ascii", "binary", "binary_compressed"):
        cases.append(
            ("pcd", f"{mode}", pcd_bytes(xyz + pcd_color + [("intensity", inten)], mode), base)
        )
    cases += [
        (
            "pcd",
            "field COUNT 4 (binary)",
            pcd_bytes(xyz + [("hist", hist)], "binary"),
            PointArrays(pos, features=hist.astype(np.float64)),
        ),
        (
            "pcd",
            "field COUNT 4 (binary_compressed)",
            pcd_bytes(xyz + [("hist", hist)], "binary_compressed"),
            PointArrays(pos, features=hist.astype(np.float64)),
        ),
        (
            "pcd",
            "padding fields _ _",
            pcd_bytes(xyz + [("_", pad), ("_", pad), ("intensity", inten)], "binary"),
            PointArrays(pos, features=inten[:, None].astype(np.float64)),
        ),
        (
            "pcd",
            "I1 / U2 / F8 fields",
            pcd_bytes(xyz + typed, "binary"),
            PointArrays(pos, features=np.stack([c.astype(np.float64) for _, c in typed], 1)),
        ),
    ]
    return cases


def completeness(folder: str) -> list[tuple[str, str, dict[str, str]]]:
    rows = []
    for fmt, case, data, want in completeness_cases():
        path = os.path.join(folder, f"case.{fmt}")
        with open(path, "wb") as f:
            f.write(data)
        results = {}
        for name, reader in READERS[fmt].items():
            try:
                results[name] = "yes" if _same(reader(path), want) else "wrong values"
            except Exception as exc:  # a library's own error type: the case is not supported
                results[name] = f"no ({type(exc).__name__})"
        rows.append((fmt, case, results))
    return rows


# -- speed -----------------------------------------------------------------------------


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(folder: str, n: int, repeats: int) -> list[tuple[str, dict[str, list[float]]]]:
    cloud = scan(n)
    files = {
        "PLY read, binary little-endian": ("ply", scan_ply(cloud, "binary_little_endian", False)),
        "PLY read, binary big-endian": ("ply", scan_ply(cloud, "binary_big_endian", False)),
        f"PLY read, little-endian + {n:,} faces": (
            "ply",
            scan_ply(cloud, "binary_little_endian", True),
        ),
        "PCD read, binary_compressed": ("pcd", scan_pcd(cloud)),
    }
    tasks: list[tuple[str, dict[str, Callable[[], object]]]] = []
    for i, (row, (fmt, data)) in enumerate(files.items()):
        path = os.path.join(folder, f"in{i}.{fmt}")
        with open(path, "wb") as f:
            f.write(data)
        readers = READERS[fmt]
        outs = {name: reader(path) for name, reader in readers.items()}
        first = next(iter(outs.values()))
        for name, out in outs.items():
            assert _same(out, first), f"{row}: {name} reads different values"
        tasks.append((row, {name: (lambda r=r, p=path: r(p)) for name, r in readers.items()}))
    ply_args = {"pos": cloud["pos"], "normal": cloud["normal"], "color": cloud["color"]}
    pcd_args = {
        "pos": cloud["pos"],
        "color": cloud["color"],
        "features": cloud["intensity"][:, None],
    }
    writes = {"PLY write, binary": ("ply", ply_args), "PCD write, binary": ("pcd", pcd_args)}
    for row, (fmt, args) in writes.items():
        out = os.path.join(folder, f"out.{fmt}")

        def call(writer, args=args, out=out):
            with open(out, "wb") as f:
                writer(f, **args)

        tasks.append((row, {name: (lambda w=w, c=call: c(w)) for name, w in WRITERS[fmt].items()}))
    tasks.append(
        (
            "PCD write, binary_compressed",
            {
                "pointset": lambda: write_pcd(io.BytesIO(), compressed=True, **pcd_args),
                "pypcd4": lambda: pypcd4_write_compressed(io.BytesIO(), **pcd_args),
            },
        )
    )
    times: dict[str, dict[str, list[float]]] = {row: {k: [] for k in fns} for row, fns in tasks}
    for _ in range(repeats):  # interleaved: every candidate once per round
        for row, fns in tasks:
            for name, fn in fns.items():
                times[row][name].append(_time(fn))
    return list(times.items())


def _cell(ts: list[float]) -> str:
    return f"{statistics.median(ts):.3f} s ({min(ts):.3f}-{max(ts):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from importlib.metadata import version

    import plyfile
    import pypcd4

    print(f"command: python benchmarks/io.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}, plyfile "
        f"{version('plyfile')}, pypcd4 {version('pypcd4')}; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')} (all candidates run single-threaded)"
    )
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    del plyfile, pypcd4
    with tempfile.TemporaryDirectory() as folder:
        rows = completeness(folder)
        results = speed(folder, args.points, args.repeats)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print(
        f"| {args.points:,} points, median of {args.repeats} (min-max) | pointset | library | library / pointset |"
    )
    print("| --- | --- | --- | --- |")
    for row, cells in results:
        ours = cells.get("pointset")
        lib_name = next(k for k in cells if k != "pointset")
        lib = cells[lib_name]
        ratio = f"{statistics.median(lib) / statistics.median(ours):.2f}" if ours else "-"
        print(
            f"| {row} | {_cell(ours) if ours else 'not supported'} | {lib_name} {_cell(lib)} | {ratio} |"
        )
    print("\n| format | case | pointset | library |")
    print("| --- | --- | --- | --- |")
    for fmt, case, res in rows:
        lib_name = next(k for k in res if k != "pointset")
        print(f"| {fmt} | {case} | {res['pointset']} | {lib_name}: {res[lib_name]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
