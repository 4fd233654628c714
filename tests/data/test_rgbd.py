"""RGBD back-projection. Oracle: Open3D's ``RGBDImage.create_from_*`` +
``PointCloud.create_from_rgbd_image``; plus a numpy pinhole reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointset.data import (
    PRIMESENSE_DEFAULT,
    PinholeIntrinsics,
    PointSet,
    decode_sun_depth,
    from_rgbd,
    from_rgbd_convention,
    read_pgm,
    read_rgbd,
)

FRAMES = {
    "redwood": ("redwood/color/00000.jpg", "redwood/depth/00000.png"),
    "tum": ("tum/color.png", "tum/depth.png"),
    "sun": ("sun/color.jpg", "sun/depth.png"),
}


def _o3d():
    return pytest.importorskip("open3d")


def _o3d_cloud(o3d, rgbd):
    intr = o3d.camera.PinholeCameraIntrinsic(
        o3d.camera.PinholeCameraIntrinsicParameters.PrimeSenseDefault
    )
    pcd = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intr)
    return np.asarray(pcd.points), np.asarray(pcd.colors)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_real_frames_match_open3d(shared_dir, name):
    """Acceptance: equal point count, positions within 1e-5 m, colours equal."""
    o3d = _o3d()
    color_path, depth_path = (str(shared_dir / "data" / "rgbd" / p) for p in FRAMES[name])
    color_img, depth_img = o3d.io.read_image(color_path), o3d.io.read_image(depth_path)
    # Open3D's SUN conversion rewrites the depth image in place: copy the inputs first.
    color, depth = np.asarray(color_img).copy(), np.asarray(depth_img).copy()
    create = getattr(o3d.geometry.RGBDImage, f"create_from_{name}_format")
    ref_pos, ref_col = _o3d_cloud(o3d, create(color_img, depth_img, convert_rgb_to_intensity=False))

    ps = from_rgbd_convention(color, depth, name)
    assert ps.num_points == ref_pos.shape[0] > 100_000
    assert np.abs(ps.pos.double().numpy() - ref_pos).max() < 1e-5
    assert np.abs(ps.x.double().numpy() - ref_col).max() < 1e-6
    # float64 output reproduces Open3D's double arithmetic
    ps64 = from_rgbd_convention(color, depth, name, dtype=torch.float64)
    assert np.abs(ps64.pos.numpy() - ref_pos).max() < 1e-12
    # pixels: row-major and consistent with the depth image
    pix = ps.pixel.numpy()
    assert (np.diff(pix[:, 0] * 640 + pix[:, 1]) > 0).all()
    assert (depth[pix[:, 0], pix[:, 1]] > 0).all()
    # reading from disk (Pillow decoding) gives the same cloud
    from_disk = read_rgbd(color_path, depth_path, convention=name)
    assert torch.equal(from_disk.pos, ps.pos) and torch.equal(from_disk.x, ps.x)


@pytest.mark.parametrize("trunc", [3.3, 2.7, 1.1, 4.0])
def test_truncation_boundary_matches_open3d(trunc):
    """Depth exactly at a non-representable truncation: Open3D compares in double."""
    o3d = _o3d()
    rng = np.random.default_rng(0)
    h, w = 40, 50
    depth = rng.integers(0, 5000, (h, w)).astype(np.uint16)
    depth.flat[:6] = [int(trunc * 1000) - 1, int(trunc * 1000), int(trunc * 1000) + 1, 0, 1, 65535]
    color = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(color),
        o3d.geometry.Image(depth),
        depth_scale=1000.0,
        depth_trunc=trunc,
        convert_rgb_to_intensity=False,
    )
    ref_pos, ref_col = _o3d_cloud(o3d, rgbd)
    ps = from_rgbd(color, depth, PRIMESENSE_DEFAULT, depth_scale=1000.0, depth_trunc=trunc)
    assert ps.num_points == ref_pos.shape[0]
    assert np.abs(ps.pos.double().numpy() - ref_pos).max() < 1e-6
    assert np.abs(ps.x.double().numpy() - ref_col).max() < 1e-6


def test_float_depth_with_nan_and_negative_matches_open3d():
    o3d = _o3d()
    rng = np.random.default_rng(1)
    depth = rng.uniform(-1.0, 5.0, (30, 20)).astype(np.float32)
    depth[0, :5] = np.nan
    color = rng.integers(0, 256, (30, 20, 3)).astype(np.uint8)
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(color),
        o3d.geometry.Image(depth),
        depth_scale=1.0,
        depth_trunc=3.0,
        convert_rgb_to_intensity=False,
    )
    ref_pos, _ = _o3d_cloud(o3d, rgbd)
    ps = from_rgbd(torch.from_numpy(color), torch.from_numpy(depth), PRIMESENSE_DEFAULT, 1.0, 3.0)
    assert ps.num_points == ref_pos.shape[0]
    assert np.abs(ps.pos.double().numpy() - ref_pos).max() < 1e-6


def test_nyu_convention_matches_open3d():
    """Synthetic raw NYU frame (PGM samples read big-endian, as Open3D's example does)."""
    o3d = _o3d()
    rng = np.random.default_rng(2)
    disparity = rng.integers(300, 1100, (24, 32)).astype(np.uint16)
    disparity.flat[:8] = [0, 1086, 1087, 1088, 1092, 1093, 2047, 65535]
    raw = disparity.byteswap()  # what the big-endian read of the files yields
    color = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
    rgbd = o3d.geometry.RGBDImage.create_from_nyu_format(
        o3d.geometry.Image(color), o3d.geometry.Image(raw.copy()), convert_rgb_to_intensity=False
    )
    ref_pos, ref_col = _o3d_cloud(o3d, rgbd)
    ps = from_rgbd_convention(color, raw, "nyu")
    assert ps.num_points == ref_pos.shape[0] > 0
    assert np.abs(ps.pos.double().numpy() - ref_pos).max() < 1e-5
    assert np.abs(ps.x.double().numpy() - ref_col).max() < 1e-6


def test_pinhole_formula_numpy_reference():
    depth = np.array([[0, 1000, 2500], [4000, 500, 3000]], dtype=np.uint16)
    color = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    k = PinholeIntrinsics(fx=100.0, fy=200.0, cx=1.0, cy=0.5)
    ps = from_rgbd(color, depth, k, depth_scale=1000.0, depth_trunc=3.0, dtype=torch.float64)
    keep = [(0, 1), (0, 2), (1, 1)]  # 0 dropped, 4.0 and 3.0 m >= trunc dropped
    assert ps.pixel.tolist() == [list(p) for p in keep]
    for i, (v, u) in enumerate(keep):
        z = depth[v, u] / 1000.0
        expect = [(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z]
        np.testing.assert_allclose(ps.pos[i].numpy(), expect, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ps.x[i].numpy(), color[v, u] / 255.0, atol=1e-12)
    no_trunc = from_rgbd(color, depth, k, depth_trunc=math.inf)
    assert no_trunc.num_points == 5


def test_batched_frames_equal_single_frames():
    rng = np.random.default_rng(3)
    depth = torch.from_numpy(rng.integers(0, 4000, (3, 8, 9)).astype(np.int32))
    depth[1] = 0  # an empty frame
    color = torch.from_numpy(rng.integers(0, 256, (3, 8, 9, 3)).astype(np.uint8))
    batched = from_rgbd(color, depth, PRIMESENSE_DEFAULT)
    assert isinstance(batched, PointSet) and batched.num_clouds == 3
    for i, cloud in enumerate(batched.clouds()):
        single = from_rgbd(color[i], depth[i], PRIMESENSE_DEFAULT)
        assert torch.equal(cloud.pos, single.pos) and torch.equal(cloud.pixel, single.pixel)
    assert batched.cloud_sizes()[1] == 0


def test_sun_decoding_numpy_reference():
    d = np.random.default_rng(4).integers(0, 65536, 1000).astype(np.uint16)
    ref = ((d >> 3) | (d << 13)).astype(np.uint16)  # 16-bit rotate right by 3
    assert np.array_equal(decode_sun_depth(d).numpy(), ref.astype(np.int32))


def test_intrinsics_forms_agree():
    o3d = pytest.importorskip("open3d")
    forms = [
        PRIMESENSE_DEFAULT,
        (525.0, 525.0, 319.5, 239.5),
        np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]]),
        torch.tensor([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]]),
        o3d.camera.PinholeCameraIntrinsic(
            o3d.camera.PinholeCameraIntrinsicParameters.PrimeSenseDefault
        ),
    ]
    for form in forms:
        assert PinholeIntrinsics.from_any(form) == PRIMESENSE_DEFAULT
    assert torch.equal(PRIMESENSE_DEFAULT.matrix(), torch.from_numpy(forms[2]))


def test_read_pgm_big_endian(tmp_path):
    values = np.array([[1, 258, 65535], [0, 4096, 7]], dtype=np.uint16)
    path = tmp_path / "d.pgm"
    path.write_bytes(b"P5\n# comment\n3 2\n65535\n" + values.astype(">u2").tobytes())
    assert np.array_equal(read_pgm(path), values)
    path.write_bytes(b"P5\n3 2\n65535\n" + b"\x00" * 5)
    with pytest.raises(ValueError, match="truncated"):
        read_pgm(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 6), np.uint16)),
            r"color is \(4, 5\).*depth is \(4, 6\)",
        ),
        (
            dict(color=np.zeros((4, 5, 2), np.uint8), depth=np.zeros((4, 5), np.uint16)),
            "color must have shape",
        ),
        (
            dict(color=np.zeros((4, 5, 3), np.int32), depth=np.zeros((4, 5), np.uint16)),
            "uint8 or floating",
        ),
        (
            dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 5), bool)),
            "dtype torch.bool",
        ),
        (dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros(5, np.uint16)), r"\[H, W\]"),
        (
            dict(
                color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 5)), intrinsics=(0, 1, 2, 3)
            ),
            "focal",
        ),
        (
            dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 5)), intrinsics=np.eye(2)),
            "shape",
        ),
        (
            dict(
                color=np.zeros((4, 5, 3), np.uint8),
                depth=np.zeros((4, 5)),
                intrinsics=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]],
            ),
            "skew",
        ),
        (
            dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 5)), depth_scale=0.0),
            "depth_scale",
        ),
        (
            dict(color=np.zeros((4, 5, 3), np.uint8), depth=np.zeros((4, 5)), depth_trunc=-1.0),
            "depth_trunc",
        ),
        # float colours in 0-255 used to pass as if they were in [0, 1]
        (
            dict(color=np.full((4, 5, 3), 200.0), depth=np.zeros((4, 5))),
            r"floating color must lie in \[0, 1\], got range \[200.0, 200.0\].*uint8",
        ),
        (
            dict(color=np.full((4, 5, 3), np.nan, np.float32), depth=np.zeros((4, 5))),
            r"floating color must lie in \[0, 1\]",
        ),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, message):
    kwargs.setdefault("intrinsics", PRIMESENSE_DEFAULT)
    with pytest.raises(ValueError, match=message):
        from_rgbd(**kwargs)


def test_convention_errors():
    with pytest.raises(ValueError, match="unknown RGBD convention 'kitti'"):
        from_rgbd_convention(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint16), "kitti")
    with pytest.raises(ValueError, match="raw uint16"):
        from_rgbd_convention(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.float32), "sun")
    with pytest.raises(FileNotFoundError):
        read_rgbd("/nonexistent/c.png", "/nonexistent/d.png")


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_read_rgbd_rejects_8_bit_and_palette_depth(tmp_path, mode):
    """Oracle: the documented input (16-bit depth): an 8-bit, palette or 1-bit PNG cannot
    hold depth and used to be back-projected as if it did."""
    from PIL import Image

    color = tmp_path / "c.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(color)
    depth = tmp_path / "d.png"
    Image.fromarray(np.full((4, 5), 100, np.uint8)).convert(mode).save(depth)
    with pytest.raises(ValueError, match=f"d.png: depth must be a 16-bit.*mode '{mode}'"):
        read_rgbd(color, depth)
    Image.fromarray(np.full((4, 5), 1000, np.uint16)).save(depth)  # the documented form
    assert read_rgbd(color, depth).num_points == 20


def test_read_rgbd_names_a_folder_given_as_a_file(tmp_path):
    """Oracle: the file system; a folder is not reported as missing."""
    with pytest.raises(IsADirectoryError, match="depth image .* is a folder, not a file"):
        read_rgbd(__file__, tmp_path)
    with pytest.raises(FileNotFoundError, match="colour image .*c.png does not exist"):
        read_rgbd(tmp_path / "c.png", tmp_path)
