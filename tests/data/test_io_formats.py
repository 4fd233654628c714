"""PLY and PCD layouts beyond the plain round trip: files built byte by byte from the format
specifications (PLY's header grammar, PCL's PCD v0.7 layouts), read back through
``pointset.read`` and compared with the values that went in."""

from __future__ import annotations

import lzf
import numpy as np
import pytest
import torch

from pointset.data import read

TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4"}
TYPES.update({"uint": "u4", "float": "f4", "double": "f8"})


def _pos(n: int = 6) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)


def _ply_with_lists(fmt: str, pos: np.ndarray, faces_first: bool) -> bytes:
    """Vertices ``x, ring (list), y, z, w`` and a face element before or after them."""
    n = len(pos)
    order = ">" if fmt == "binary_big_endian" else "<"
    vertex = [f"element vertex {n}", "property float x", "property list uchar int ring"]
    vertex += ["property float y", "property float z", "property short w"]
    face = ["element face 2", "property list uchar int vertex_indices"]
    head = ["ply", f"format {fmt} 1.0", "comment hand-made", "obj_info test"]
    head += (face + vertex if faces_first else vertex + face) + ["end_header"]
    if fmt == "ascii":
        vrows = [
            f"{p[0]!r} {i % 3} {' '.join(str(k) for k in range(i % 3))} {p[1]!r} {p[2]!r} {i - 3}"
            for i, p in enumerate(pos.tolist())
        ]
        vblock = ("\n".join(vrows) + "\n").encode()
        fblock = b"3 0 1 2\n4 0 1 2 3\n"
    else:
        rows = []
        for i, p in enumerate(pos):
            rows.append(p[:1].astype(order + "f4").tobytes())
            rows.append(bytes([i % 3]) + np.arange(i % 3).astype(order + "i4").tobytes())
            rows.append(p[1:].astype(order + "f4").tobytes())
            rows.append(np.array([i - 3], order + "i2").tobytes())
        vblock = b"".join(rows)
        fblock = b"".join(
            bytes([len(f)]) + np.array(f, order + "i4").tobytes() for f in ([0, 1, 2], [0, 1, 2, 3])
        )
    body = fblock + vblock if faces_first else vblock + fblock
    return ("\n".join(head) + "\n").encode() + body


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("faces_first", [False, True])
def test_ply_list_properties_and_faces_are_skipped(tmp_path, fmt, faces_first):
    """List properties of the vertices and whole face elements (before or after the
    vertices) are skipped; the scalars around them keep their values."""
    pos = _pos()
    path = tmp_path / "lists.ply"
    path.write_bytes(_ply_with_lists(fmt, pos, faces_first))
    ps = read(path)
    assert torch.equal(ps.pos, torch.from_numpy(pos))
    assert ps.x[:, 0].tolist() == [i - 3 for i in range(len(pos))]


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_ply_every_scalar_type(tmp_path, fmt):
    """All eight PLY scalar types, under their old and new names, become feature columns
    with their extreme values intact."""
    n = 5
    order = ">" if fmt == "binary_big_endian" else "<"
    pos = _pos(n)
    cols = [(a, "float", pos[:, i]) for i, a in enumerate("xyz")]
    for name, code in TYPES.items():
        info = np.iinfo(code) if code[0] in "iu" else np.finfo(code)
        values = np.array([info.min, info.max, 0, 1, 2], dtype=code)
        new_name = {"i": "int", "u": "uint", "f": "float"}[code[0]] + str(8 * int(code[1]))
        cols += [(f"old_{name}", name, values), (f"new_{name}", new_name, values[::-1].copy())]
    head = ["ply", f"format {fmt} 1.0", f"element vertex {n}"]
    head += [f"property {ptype} {name}" for name, ptype, _ in cols] + ["end_header"]
    rec = np.empty(n, [(name, order + v.dtype.str[1:]) for name, _, v in cols])
    for name, _, values in cols:
        rec[name] = values
    path = tmp_path / "types.ply"
    path.write_bytes(("\n".join(head) + "\n").encode() + rec.tobytes())
    ps = read(path, dtype=torch.float64)
    np.testing.assert_array_equal(ps.pos.numpy(), pos)
    want = np.stack([v.astype(np.float64) for _, _, v in cols[3:]], 1)
    np.testing.assert_array_equal(ps.x.numpy(), want)


def _pcd(fields: list[tuple[str, str, np.ndarray]], mode: str) -> bytes:
    """PCD v0.7 of ``(name, TYPE letter, values [N, count])``."""
    n = len(fields[0][2])
    head = [
        "# .PCD v0.7",
        "VERSION 0.7",
        "FIELDS " + " ".join(f[0] for f in fields),
        "SIZE " + " ".join(str(f[2].dtype.itemsize) for f in fields),
        "TYPE " + " ".join(f[1] for f in fields),
        "COUNT " + " ".join(str(f[2].shape[1]) for f in fields),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {mode}",
    ]
    if mode == "binary":  # point after point, fields in order
        body = np.concatenate([f[2].view(np.uint8).reshape(n, -1) for f in fields], 1).tobytes()
    else:  # binary_compressed: field after field, each point's COUNT values together, LZF
        raw = b"".join(f[2].tobytes() for f in fields)
        packed = lzf.compress(raw, 2 * len(raw) + 16)
        body = np.array([len(packed), len(raw)], "<u4").tobytes() + packed
    return ("\n".join(head) + "\n").encode() + body


@pytest.mark.parametrize("mode", ["binary", "binary_compressed"])
def test_pcd_counts_padding_and_types(tmp_path, mode):
    """COUNT > 1 fields keep each point's values together, ``_`` padding fields are
    dropped, and I1 / U2 / F8 fields become features."""
    n = 9
    rng = np.random.default_rng(1)
    pos = _pos(n)
    hist = rng.normal(size=(n, 4)).astype("<f4")
    small = rng.integers(-9, 9, (n, 1)).astype("i1")
    label = rng.integers(0, 999, (n, 1)).astype("<u2")
    depth = rng.normal(size=(n, 1)).astype("<f8")
    pad = np.full((n, 1), 7, "<f4")
    fields = [(a, "F", pos[:, i : i + 1].astype("<f4")) for i, a in enumerate("xyz")]
    fields += [("_", "F", pad), ("hist", "F", hist), ("_", "F", pad), ("small", "I", small)]
    fields += [("label", "U", label), ("depth", "F", depth)]
    path = tmp_path / "fields.pcd"
    path.write_bytes(_pcd(fields, mode))
    ps = read(path, dtype=torch.float64)
    np.testing.assert_array_equal(ps.pos.numpy(), pos)
    want = np.concatenate([hist, small, label, depth], 1).astype(np.float64)
    np.testing.assert_array_equal(ps.x.numpy(), want)


def test_corrupt_compressed_pcd_names_file(tmp_path):
    """Oracle: LZF streams cut or overwritten by hand."""
    pos = np.arange(300, dtype="<f4").reshape(100, 3)
    fields = [(a, "F", pos[:, i : i + 1].copy()) for i, a in enumerate("xyz")]
    good = _pcd(fields, "binary_compressed")
    start = good.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n")
    cases = {
        "short": good[:-20],
        "garbage": good[: start + 8] + b"\xff" * (len(good) - start - 8),
        "size": good[:start]
        + np.array([len(good) - start - 8, 99], "<u4").tobytes()
        + good[start + 8 :],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.pcd"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="PCD") as info:
            read(path)
        assert str(path) in str(info.value), name
