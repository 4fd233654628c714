"""``read_rgbd`` on depth files that are truncated, empty, garbage or a folder: a
``ValueError`` (one line in the CLI) that names the file. Oracle: the file written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pointset.data import read_rgbd


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
