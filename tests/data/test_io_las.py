"""LAS / LAZ files. Oracle: laspy writing and reading the same files directly (its own
point records, scales and offsets), and hand-computed integer coordinates."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pointset.cli import main
from pointset.data import PointSet, read, write

laspy = pytest.importorskip("laspy")
SUFFIXES = [".las", pytest.param(".laz", id="laz")]
RGB = ("red", "green", "blue")


def _laspy_file(path, point_format: int, version: str, n: int = 60) -> dict:
    """A file written by laspy alone; returns the values it holds."""
    rng = np.random.default_rng(point_format)
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = np.array([0.01, 0.001, 0.25])
    header.offsets = np.array([500000.0, -20.0, 3.0])
    las = laspy.LasData(header)
    ints = rng.integers(-(10**6), 10**6, size=(n, 3), dtype=np.int32)
    las.X, las.Y, las.Z = ints[:, 0], ints[:, 1], ints[:, 2]
    values = {
        "intensity": rng.integers(0, 65536, n),
        "return_number": rng.integers(1, 6, n),
        "classification": rng.integers(0, 19, n),
    }
    for name, value in values.items():
        las[name] = value
    if "red" in las.point_format.dimension_names:
        for name in RGB:
            values[name] = rng.integers(0, 65536, n)
            las[name] = values[name]
    las.write(str(path))
    values["pos"] = ints * header.scales + header.offsets
    return values


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize(
    ("point_format", "version"), [(1, "1.2"), (3, "1.2"), (6, "1.4"), (7, "1.4"), (8, "1.4")]
)
def test_reads_files_written_by_laspy(tmp_path, suffix, point_format, version):
    """Scaled and offset coordinates (X * scale + offset by hand), colours / 65535 when the
    point format has them, then intensity, return number and classification."""
    path = tmp_path / f"scan{suffix}"
    ref = _laspy_file(path, point_format, version)
    ps = read(path)
    assert ps.pos.dtype == torch.float64
    np.testing.assert_allclose(ps.pos.numpy(), ref["pos"], rtol=0, atol=1e-9)
    fields = np.stack([ref[k] for k in ("intensity", "return_number", "classification")], 1)
    if "red" in ref:
        color = np.stack([ref[k] for k in RGB], 1) / 65535
        np.testing.assert_allclose(ps.x[:, :3].numpy(), color, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(ps.x[:, 3:].numpy(), fields)
    else:
        np.testing.assert_array_equal(ps.x.numpy(), fields)
    assert read(path, dtype=torch.float32).pos.dtype == torch.float32


def _cloud(n: int = 80, colour: bool = True) -> PointSet:
    g = torch.Generator().manual_seed(n)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 40
    pos += torch.tensor([612345.678, 4321987.5, -12.0], dtype=torch.float64)  # UTM-like
    fields = torch.stack(
        [
            torch.randint(0, 65536, (n,), generator=g),
            torch.randint(1, 16, (n,), generator=g),
            torch.randint(0, 256, (n,), generator=g),
        ],
        1,
    ).double()
    parts = [torch.randint(0, 256, (n, 3), generator=g).double() / 255] if colour else []
    extra = torch.randn(n, 2, generator=g, dtype=torch.float64)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    return PointSet(pos=pos, x=torch.cat([*parts, fields, extra], 1), normal=normal)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("colour", [True, False])
def test_written_files_read_by_laspy_and_back(tmp_path, suffix, colour):
    """laspy sees the integers, scales and offsets of the documented choice (error at most
    half the scale), the fields, 16-bit colours and the extra dimensions; pointset reads
    its own file back to the same values."""
    ps = _cloud(colour=colour)
    path = tmp_path / f"out{suffix}"
    write(path, ps)
    las = laspy.read(str(path))
    assert las.header.are_points_compressed == (suffix == ".laz")
    assert las.header.point_format.id == (7 if colour else 6)
    scales, offsets = las.header.scales, las.header.offsets
    np.testing.assert_array_equal(offsets, np.floor(ps.pos.min(0).values.numpy()))
    extent = ps.pos.max(0).values.numpy() - offsets
    assert (extent / scales < 2**31 - 1).all() and (extent / (scales / 10) >= 2**31 - 1).all()
    xyz = np.stack([las.X, las.Y, las.Z], 1) * scales + offsets
    assert (np.abs(xyz - ps.pos.numpy()) <= scales / 2 + 1e-9).all()
    x = ps.x.numpy()
    k = 3 if colour else 0
    if colour:
        np.testing.assert_array_equal(
            np.stack([las[c] for c in RGB], 1), np.round(x[:, :3] * 65535)
        )
    for i, name in enumerate(("intensity", "return_number", "classification")):
        np.testing.assert_array_equal(np.asarray(las[name]), x[:, k + i])
    np.testing.assert_array_equal(np.asarray(las["feat_0"]), x[:, k + 3])
    np.testing.assert_array_equal(np.asarray(las["nz"]), ps.normal[:, 2].numpy())

    back = read(path)
    assert (back.pos - ps.pos).abs().max() <= float(scales.max()) / 2 + 1e-9
    assert torch.allclose(back.x, ps.x, rtol=0, atol=1e-12)
    assert torch.equal(back.normal, ps.normal)
    write(path, back)  # a read file writes back to the same layout
    again = read(path)
    assert torch.equal(again.x, back.x) and torch.equal(again.pos, back.pos)


def test_colour_only_and_bare_points(tmp_path):
    """Hand-checked: 8-bit colours land on 16-bit k * 257; no x gives zero fields."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    color = torch.tensor([[0, 128, 255], [1, 2, 3]]) / 255
    write(tmp_path / "c.las", PointSet(pos=pos, x=color))
    las = laspy.read(str(tmp_path / "c.las"))
    assert las.red.tolist() == [0, 257] and las.blue.tolist() == [65535, 771]
    back = read(tmp_path / "c.las")
    assert torch.allclose(back.x[:, :3].float(), color) and back.x[:, 3:].eq(0).all()
    write(tmp_path / "p.laz", PointSet(pos=pos))
    bare = read(tmp_path / "p.laz")
    assert torch.allclose(bare.pos.float(), pos) and bare.x.shape == (2, 3)
    write(tmp_path / "empty.las", PointSet(pos=torch.zeros(0, 3)))
    assert read(tmp_path / "empty.las").num_points == 0


def test_bad_feature_values_and_ascii_are_rejected(tmp_path):
    pos = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="'intensity' must hold integers in \\[0, 65535\\]"):
        write(tmp_path / "a.las", PointSet(pos=pos, x=torch.tensor([[0.5], [1.0]])))
    with pytest.raises(ValueError, match="'return_number' must hold integers in \\[0, 15\\]"):
        write(tmp_path / "a.las", PointSet(pos=pos, x=torch.tensor([[1.0, 16.0]] * 2)))
    with pytest.raises(ValueError, match="binary only"):
        write(tmp_path / "a.las", PointSet(pos=pos), binary=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_and_garbage_files_raise_value_error_naming_file(tmp_path, suffix):
    """Oracle: the byte counts of a file laspy wrote, cut short at several places."""
    good = tmp_path / f"good{suffix}"
    write(good, _cloud(300))
    data = good.read_bytes()
    cases = {"garbage": b"\x00LAS" * 300, "header": data[:200], "points": data[:-50]}
    cases["start"] = data[:300]
    for name, content in cases.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="LAS") as info:
            read(path)
        assert str(path) in str(info.value), name


def test_missing_laspy_or_backend_names_the_extra(tmp_path, monkeypatch):
    """The install hint names the ``io`` extra, for laspy and for its LAZ backend."""
    write(tmp_path / "a.laz", _cloud(10))
    monkeypatch.setattr(laspy.LazBackend, "detect_available", staticmethod(lambda: ()))
    with pytest.raises(ImportError, match=r"lazrs.*pip install pointset\[io\]"):
        read(tmp_path / "a.laz")
    monkeypatch.setitem(sys.modules, "laspy", None)
    with pytest.raises(ImportError, match=r"pip install pointset\[io\]"):
        write(tmp_path / "b.las", _cloud(10))


def test_cli_converts_ply_to_laz_and_back(tmp_path, capsys):
    """`pointset convert` in both directions; oracle: the PLY round trip of the same cloud."""
    ps = _cloud(50)
    ps.x = ps.x[:, :3].float()  # colours only
    ps.pos = ps.pos.float()
    write(tmp_path / "a.ply", ps)
    assert main(["convert", str(tmp_path / "a.ply"), str(tmp_path / "a.laz")]) == 0
    assert main(["convert", str(tmp_path / "a.laz"), str(tmp_path / "b.ply")]) == 0
    back = read(tmp_path / "b.ply")
    assert back.num_points == 50 and torch.equal(back.normal, ps.normal)
    assert torch.allclose(back.x[:, :3].float(), ps.x, atol=1e-6)
    assert (back.pos - ps.pos).abs().max() < 1e-5
    assert "-> " in capsys.readouterr().out
