"""``read_rgbd`` on depth files that are truncated, empty, garbage or a folder: a
``ValueError`` (one line in the CLI) that names the file. Oracle: the file written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pointset.data import read_rgbd
from pointset.data.rgbd import read_color, read_depth


@pytest.fixture
def color(tmp_path):
    path = tmp_path / "color.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(path)
    return path


def _depth_png(tmp_path):
    path = tmp_path / "depth.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(500, 4000, (24, 32), dtype=np.uint16)).save(path)
    return path


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_depth_png_names_the_file(tmp_path, color, how):
    depth = _depth_png(tmp_path)
    raw = depth.read_bytes()
    depth.write_bytes(
        {"truncated": raw[: len(raw) // 2], "empty": b"", "garbage": b"\x89junk" * 40}[how]
    )
    with pytest.raises(ValueError) as info:
        read_rgbd(color, depth)
    text = str(info.value)
    assert str(depth) in text and "\n" not in text


def test_depth_folder_names_the_folder(tmp_path, color):
    folder = tmp_path / "depth.png"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=f"{folder} is a folder"):
        read_rgbd(color, folder)


def test_good_pair_still_reads(tmp_path, color):
    points = read_rgbd(color, _depth_png(tmp_path), "redwood")
    assert points.pos.shape[1] == 3 and points.num_nodes > 0


def test_read_color_and_depth_return_the_written_pixels(tmp_path, color):
    """Oracle: the arrays written with Pillow."""
    depth = _depth_png(tmp_path)
    assert (read_color(color) == np.zeros((24, 32, 3), np.uint8)).all()
    expected = np.asarray(Image.open(depth))
    got = read_depth(str(depth))
    assert got.shape == (24, 32) and (got == expected).all()


def test_read_depth_rejects_8_bit_and_missing_files(tmp_path):
    """Oracle: an 8-bit image cannot hold depth; a missing path is not a file."""
    eight = tmp_path / "depth8.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(eight)
    with pytest.raises(ValueError, match="8-bit values cannot hold depth"):
        read_depth(eight)
    with pytest.raises(FileNotFoundError, match="depth image .*missing.png does not exist"):
        read_depth(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="colour image"):
        read_color(tmp_path / "missing.png")
