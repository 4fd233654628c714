"""The built-in segmentation scenes and the renderer's label image.

Oracles: analytic ray-solid intersections (depth of a sphere / cylinder / cone seen head
on), the frame's own label image and depth read through each point's pixel
back-reference, and a second generation with the same seed (determinism)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointset.datasets import SyntheticScenes
from pointset.datasets.render import Box, Frustum, Sphere, render_rgbd
from pointset.datasets.synthetic_scenes import (
    CLASS_NAMES,
    DEPTH_SCALE,
    STORED_POINTS,
    frame_points,
    render_scene,
)

SIZE = (41, 31)  # odd, so the principal point is the centre pixel
K = (40.0, 40.0, 20.0, 15.0)


def _centre(solids, **kw):
    color, depth, label, _ = render_rgbd(solids, *SIZE, K, return_labels=True, **kw)
    return depth[15, 20] / 1000.0, label[15, 20], label


def test_label_image_of_solids_head_on():
    """Centre-pixel depth equals the analytic first hit; the label is the solid's."""
    z, lab, _ = _centre([Sphere((0.0, 0.0, 2.0), 0.5, (1, 0, 0), label=7)])
    assert lab == 7 and z == pytest.approx(1.5, abs=1e-3)
    z, lab, _ = _centre([Frustum((0.0, 2.0), -0.5, 0.5, 0.3, 0.3, (0, 1, 0), label=3)])
    assert lab == 3 and z == pytest.approx(1.7, abs=1e-3)  # cylinder side at z = 2 - r
    # cone of base radius 0.4 from y = 0.5 (base) to y = -0.5 (apex): at y = 0 the radius
    # is 0.2, so the ray along the axis direction hits at z = 2 - 0.2
    z, lab, _ = _centre([Frustum((0.0, 2.0), -0.5, 0.5, 0.0, 0.4, (0, 1, 0), label=4)])
    assert lab == 4 and z == pytest.approx(1.8, abs=1e-3)
    z, lab, _ = _centre([Box((-0.2, -0.2, 1.0), (0.2, 0.2, 1.4), (0, 0, 1), label=2)])
    assert lab == 2 and z == pytest.approx(1.0, abs=1e-3)


def test_floor_walls_and_pose():
    """Floor / wall labels; a camera turned by 90 degrees about y looks at a side wall."""
    _, _, label = _centre([], floor_label=0, wall_label=1, floor_y=0.5, wall_z=3.0)
    assert label[15, 20] == 1 and label[30, 20] == 0  # centre: wall; bottom row: floor
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # camera z -> world +x
    color, depth, label, _ = render_rgbd(
        [], *SIZE, K, floor_y=5.0, wall_z=9.0, pose=(rot, np.zeros(3)), side_walls=(-1, 2.0),
        wall_label=1, return_labels=True,
    )  # fmt: skip
    assert label[15, 20] == 1 and depth[15, 20] == pytest.approx(2000, abs=1)


def test_render_without_labels_is_unchanged():
    """The original return value (colour, depth, intrinsics) is kept by default."""
    out = render_rgbd([Sphere((0, 0, 2), 0.5, (1, 0, 0))], *SIZE, K)
    assert len(out) == 3 and out[1].dtype == np.uint16


def test_frame_points_read_their_pixels():
    """Every point's label and depth equal the frame's at its pixel back-reference."""
    frame = render_scene(np.random.default_rng(3))
    cloud = frame_points(frame, 512, torch.Generator().manual_seed(0))
    r, c = cloud.pixel[:, 0].numpy(), cloud.pixel[:, 1].numpy()
    assert (cloud.y.numpy() == frame.label[r, c]).all()
    assert (cloud.y >= 0).all()  # only pixels with depth are kept, and they are labelled
    z = frame.depth[r, c].astype(np.float32) / np.float32(DEPTH_SCALE)
    np.testing.assert_allclose(cloud.pos[:, 2].numpy(), z, rtol=1e-6)
    assert (frame.depth == 0).any()  # missing depth was simulated
    assert (frame.label[frame.depth == 0] == -1).all()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return root, SyntheticScenes(root, "train", num_points=300, train_scenes=12, test_scenes=3)


def test_dataset_shapes_classes_and_determinism(scenes, tmp_path):
    root, ds = scenes
    assert ds.points.shape == (12, 300, 6) and ds.labels.shape == (12, 300)
    assert len(CLASS_NAMES) >= 8
    assert set(ds.labels.unique().tolist()) == set(range(len(CLASS_NAMES)))
    assert (ds.points[..., 3:] >= 0).all() and (ds.points[..., 3:] <= 1).all()
    again = SyntheticScenes(tmp_path, "train", num_points=300, train_scenes=12, test_scenes=3)
    assert torch.equal(again.points, ds.points) and torch.equal(again.labels, ds.labels)
    test = SyntheticScenes(root, "test", num_points=STORED_POINTS, train_scenes=12, test_scenes=3)
    assert len(test) == 3 and not torch.equal(test.points[0, :300], ds.points[0])


def test_item_and_frame_agree(scenes):
    """An item's points come from the re-rendered frame at their pixels."""
    _, ds = scenes
    item, frame = ds[5], ds.frame(5)
    r, c = item.pixel[:, 0].numpy(), item.pixel[:, 1].numpy()
    assert (item.y.numpy() == frame.label[r, c]).all()
    np.testing.assert_allclose(item.x.numpy(), frame.color[r, c] / 255.0, atol=1e-6)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_points"):
        SyntheticScenes(tmp_path, num_points=STORED_POINTS + 1)
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes(tmp_path, split="val")
    with pytest.raises(ValueError, match="train_scenes"):
        SyntheticScenes(tmp_path, train_scenes=0)
