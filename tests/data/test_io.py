"""Point-set files. Oracles: the write/read round trip, and Open3D reading/writing the
same .ply/.pcd files."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from pointset.data import PointSet, from_image, read, write

SUFFIXES = [".ply", ".pcd", ".xyz", ".npy", ".npz", ".h5"]


def _cloud(n: int = 50, channels: int = 3, normals: bool = True, dtype=torch.float32) -> PointSet:
    g = torch.Generator().manual_seed(n + channels)
    attrs = dict(pos=torch.randn(n, 3, generator=g, dtype=dtype))
    if channels:
        x = torch.randint(0, 256, (n, channels), generator=g).to(dtype) / 255
        attrs["x"] = x if channels == 3 else torch.randn(n, channels, generator=g, dtype=dtype)
    if normals:
        attrs["normal"] = torch.nn.functional.normalize(
            torch.randn(n, 3, generator=g, dtype=dtype), dim=1
        )
    return PointSet(**attrs)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_colours(tmp_path, suffix, binary):
    """8-bit colours survive every format exactly; normals where the format has them."""
    ps = _cloud()
    path = tmp_path / f"cloud{suffix}"
    write(path, ps, binary=binary)
    back = read(path)
    assert torch.equal(back.pos, ps.pos)
    assert torch.allclose(back.x, ps.x, atol=1e-7, rtol=0)
    if suffix in (".ply", ".pcd", ".npz", ".h5"):
        assert torch.equal(back.normal, ps.normal)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_features_float64(tmp_path, suffix):
    """Non-colour features are stored as floats, losslessly, and float64 stays float64."""
    ps = _cloud(channels=5, normals=False, dtype=torch.float64)
    path = tmp_path / f"cloud{suffix}"
    write(path, ps)
    back = read(path, dtype=torch.float64)
    assert back.pos.dtype == torch.float64
    assert torch.equal(back.pos, ps.pos) and torch.equal(back.x, ps.x)


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_x_as_modes(tmp_path, suffix):
    ps = _cloud(normals=False)
    path = tmp_path / f"a{suffix}"
    write(path, ps, x_as="feature")
    assert torch.equal(read(path).x, ps.x)
    write(path, ps, x_as="none")
    assert read(path).x is None
    with pytest.raises(ValueError, match="x_as='color'"):
        write(path, _cloud(channels=4), x_as="color")
    odd = PointSet(pos=ps.pos, x=ps.x * 0.5 + 0.25 / 255)  # not on the 8-bit lattice
    write(path, odd)  # auto: colours, quantised to 8 bits
    assert (read(path).x - odd.x).abs().max() <= 0.5 / 255 + 1e-7


def test_npz_and_h5_keep_every_attribute(tmp_path):
    ps = from_image(torch.rand(2, 3, 4, 5))
    ps.pixel = torch.stack([ps.pos[:, 0].long(), ps.pos[:, 1].long()], dim=1)
    ps.label = torch.tensor([3, 4])
    for suffix in (".npz", ".h5"):
        write(tmp_path / f"b{suffix}", ps)
        back = read(tmp_path / f"b{suffix}")
        for key in ("x", "pos", "grid_size", "batch", "pixel", "label"):
            assert torch.equal(back[key], ps[key]), key
        assert back.num_clouds == 2 and back.is_grid
        assert [c.num_points for c in back.clouds()] == [20, 20]


def test_open3d_reads_our_files_and_we_read_open3d_files(tmp_path):
    """Oracle: Open3D's own PLY/PCD reader and writer."""
    o3d = pytest.importorskip("open3d")
    ps = _cloud(200)
    for suffix in (".ply", ".pcd"):
        for binary in (True, False):
            path = str(tmp_path / f"ours{suffix}")
            write(path, ps, binary=binary)
            pcd = o3d.io.read_point_cloud(path)
            assert np.abs(np.asarray(pcd.points) - ps.pos.double().numpy()).max() < 1e-6
            assert np.abs(np.asarray(pcd.colors) - ps.x.double().numpy()).max() < 1e-6
            assert np.abs(np.asarray(pcd.normals) - ps.normal.double().numpy()).max() < 1e-6
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(ps.pos.double().numpy())
    pcd.colors = o3d.utility.Vector3dVector(ps.x.double().numpy())
    pcd.normals = o3d.utility.Vector3dVector(ps.normal.double().numpy())
    cases = [
        (".ply", {}),
        (".ply", {"write_ascii": True}),
        (".pcd", {}),
        (".pcd", {"write_ascii": True}),
        (".pcd", {"compressed": True}),
    ]
    for i, (suffix, kwargs) in enumerate(cases):
        path = str(tmp_path / f"o3d{i}{suffix}")
        assert o3d.io.write_point_cloud(path, pcd, **kwargs)
        if kwargs.get("compressed"):
            with open(path, "rb") as f:
                assert b"DATA binary_compressed" in f.read(1000)
        back = read(path, dtype=torch.float64)
        ref = o3d.io.read_point_cloud(path)  # ascii files hold rounded values
        assert np.abs(back.pos.numpy() - np.asarray(ref.points)).max() < 1e-6, kwargs
        assert np.abs(back.x.numpy() - np.asarray(ref.colors)).max() < 1e-6, kwargs
        assert np.abs(back.normal.numpy() - np.asarray(ref.normals)).max() < 1e-6, kwargs


@pytest.mark.parametrize("name", ["cloud_bin_0.pcd", "bathtub_0154.ply"])
def test_real_scans_match_open3d(shared_dir, name):
    path = shared_dir / "data" / "scans" / name
    ps = read(path)
    assert ps.pos.shape[1] == 3 and ps.num_points > 1000
    o3d = pytest.importorskip("open3d")
    ref = o3d.io.read_point_cloud(str(path))
    assert ps.num_points == len(ref.points)
    assert np.abs(ps.pos.double().numpy() - np.asarray(ref.points)).max() < 1e-6
    if ref.has_colors():
        assert np.abs(ps.x.double().numpy() - np.asarray(ref.colors)).max() < 1e-6
    if ref.has_normals():
        assert np.abs(ps.normal.double().numpy() - np.asarray(ref.normals)).max() < 1e-6


def test_nonfinite_points_are_dropped_from_scans(tmp_path):
    path = tmp_path / "holes.xyz"
    path.write_text("0 0 0 1\nnan nan nan 2\n1 2 3 4\n")
    ps = read(path)
    assert ps.pos.tolist() == [[0, 0, 0], [1, 2, 3]] and ps.x.tolist() == [[1], [4]]


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.npz"
    write(path, _cloud())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write(path, _cloud(10))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.npz"]


def _write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_unreadable_files_raise_value_error_naming_file(tmp_path):
    good = _cloud()
    write(tmp_path / "ok.h5", good)
    h5_bytes = (tmp_path / "ok.h5").read_bytes()
    write(tmp_path / "ok.ply", good)
    ply_bytes = (tmp_path / "ok.ply").read_bytes()
    write(tmp_path / "ok.pcd", good)
    pcd_bytes = (tmp_path / "ok.pcd").read_bytes()
    with h5py.File(tmp_path / "nopos.h5", "w") as f:
        f.create_dataset("points", data=np.zeros((3, 3)))
    np.savez(tmp_path / "nopos.npz", points=np.zeros((3, 3)))
    cases = [
        (_write_bytes(tmp_path, "trunc.h5", h5_bytes[: len(h5_bytes) // 2]), "unreadable HDF5"),
        (tmp_path / "nopos.h5", r"no 'pos' array; found keys \['points'\]"),
        (tmp_path / "nopos.npz", "no 'pos' array"),
        (_write_bytes(tmp_path, "garbage.ply", os.urandom(256)), "not a PLY file"),
        (_write_bytes(tmp_path, "trunc.ply", ply_bytes[:-100]), "truncated"),
        (
            _write_bytes(tmp_path, "noend.ply", b"ply\nformat ascii 1.0\nelement vertex 2\n"),
            "end_header",
        ),
        (_write_bytes(tmp_path, "trunc.pcd", pcd_bytes[:-100]), "truncated"),
        (_write_bytes(tmp_path, "garbage.pcd", b"\xff\xfe" * 100), "PCD"),
        (_write_bytes(tmp_path, "garbage.npz", b"PK\x03\x04garbage"), "unreadable .npz"),
        (_write_bytes(tmp_path, "garbage.npy", b"\x93NUMPY garbage"), "unreadable .npy"),
        (_write_bytes(tmp_path, "ragged.xyz", b"1 2 3\n4 5\n"), "numeric table"),
        (_write_bytes(tmp_path, "narrow.xyz", b"1 2\n4 5\n"), r"\[N, 3 \+ C\]"),
    ]
    np.save(tmp_path / "flat.npy", np.zeros(5))
    cases.append((tmp_path / "flat.npy", r"shape \[N, 3 \+ C\]"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            read(path)
        assert str(path) in str(info.value), path


def test_path_and_content_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing.ply")
    with pytest.raises(ValueError, match="unsupported file type '.obj'"):
        read(tmp_path / "mesh.obj")
    batch = from_image(torch.rand(2, 3, 2, 2))
    with pytest.raises(ValueError, match="holds one cloud but the point set has 2"):
        write(tmp_path / "two.ply", batch)
    with pytest.raises(ValueError, match="stores 3-D points"):
        write(tmp_path / "flat.ply", from_image(torch.rand(3, 2, 2)))
    ps = _cloud()
    ps.name = "chair"
    with pytest.raises(ValueError, match="attribute 'name'"):
        write(tmp_path / "named.npz", ps)


def _ascii_ply(count: int) -> bytes:
    header = f"ply\nformat ascii 1.0\nelement vertex {count}\n"
    return (header + "property float x\nproperty float y\nproperty float z\nend_header\n").encode()


def _binary_ply(count: int) -> bytes:
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\n"
    header += "property float x\nproperty float y\nproperty float z\nend_header\n"
    return header.encode() + np.arange(6, dtype="<f4").tobytes()


@pytest.mark.parametrize("make", [_ascii_ply, _binary_ply])
def test_negative_ply_element_count_is_rejected(tmp_path, make):
    """Oracle: the PLY grammar (counts are non-negative). -2 used to move the read offset
    into the header and return coordinates of 2.6e20."""
    path = tmp_path / "bad.ply"
    path.write_bytes(make(-2) + b"0 0 0\n")
    with pytest.raises(
        ValueError, match="bad.ply: bad PLY header line 3.*negative element count -2"
    ):
        read(path)


@pytest.mark.parametrize("key", ["POINTS", "WIDTH"])
def test_negative_pcd_point_count_is_rejected(tmp_path, key):
    """Oracle: the PCD header grammar (counts are non-negative)."""
    values = {"WIDTH": 2, "POINTS": 2, key: -2}
    text = (
        "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        f"WIDTH {values['WIDTH']}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {values['POINTS']}\nDATA ascii\n0 0 0\n1 1 1\n"
    )
    path = tmp_path / "bad.pcd"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.pcd: bad PCD header: {key} is negative \\(-2\\)"):
        read(path)


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".npz", b"junk, not a zip", r"not an .npz archive .*starts with b'junk'"),
        (".npz", b"", "not an .npz archive"),
        (".npy", b"junk bytes here", r"not an .npy array file .*starts with b'junk"),
    ],
)
def test_junk_numpy_files_are_named_as_such(tmp_path, suffix, content, message):
    """Oracle: the file's first bytes. Junk used to be reported as "pickled (object) data"."""
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read(path)
    assert "pickled" not in str(info.value)


def test_folder_given_as_a_file(tmp_path):
    """Oracle: the file system; a folder is not reported as missing."""
    folder = tmp_path / "cloud.ply"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="cloud.ply is a folder, not a file"):
        read(folder)
    with pytest.raises(FileNotFoundError, match="absent.ply does not exist"):
        read(tmp_path / "absent.ply")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compressed_pcd_round_trip_and_open3d_reads_it(tmp_path, dtype):
    """Oracles: Open3D's PCD reader on our float32 ``binary_compressed`` file (positions,
    colours, normals; Open3D reads 8-byte PCD fields as zeros, compressed or not, so float64
    has only the next oracle), and our own reader giving back every value bit for bit, float
    features too."""
    ps = _cloud(300, dtype=dtype)
    path = str(tmp_path / "c.pcd")
    write(path, ps, compress=True)
    with open(path, "rb") as f:
        assert b"\nDATA binary_compressed\n" in f.read(1000)
    if dtype == torch.float32:
        o3d = pytest.importorskip("open3d")
        ref = o3d.io.read_point_cloud(path)
        assert np.abs(np.asarray(ref.points) - ps.pos.double().numpy()).max() == 0
        assert np.abs(np.asarray(ref.colors) - ps.x.double().numpy()).max() < 1e-6
        assert np.abs(np.asarray(ref.normals) - ps.normal.double().numpy()).max() == 0
    back = read(path, dtype=dtype)
    assert torch.equal(back.pos, ps.pos) and torch.equal(back.normal, ps.normal)
    assert torch.equal(back.x, ps.x)
    feats = _cloud(300, channels=5, normals=False, dtype=dtype)  # random floats: incompressible
    write(path, feats, compress=True)
    back = read(path, dtype=dtype)
    assert torch.equal(back.pos, feats.pos) and torch.equal(back.x, feats.x)


def test_compressed_pcd_of_an_empty_cloud_and_wrong_uses(tmp_path):
    """An empty cloud round-trips through ``binary_compressed``; ``compress`` with ASCII or
    with another format is refused, naming the file, and writes nothing."""
    empty = PointSet(pos=torch.zeros(0, 3))
    path = str(tmp_path / "e.pcd")
    write(path, empty, compress=True)
    assert read(path).pos.shape == (0, 3)
    with pytest.raises(ValueError, match="compressed PCD file is binary"):
        write(str(tmp_path / "a.pcd"), _cloud(5), binary=False, compress=True)
    with pytest.raises(ValueError, match=r"b\.ply: compress=True is for \.pcd files"):
        write(str(tmp_path / "b.ply"), _cloud(5), compress=True)
    assert sorted(os.listdir(tmp_path)) == ["e.pcd"]
