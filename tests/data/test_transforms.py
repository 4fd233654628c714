"""Point-cloud transforms (oracles: closed-form expectations, PointMLP's recipe, ops.fps)."""

from __future__ import annotations

import math

import pytest
import torch

from pointset import PointSet
from pointset.data.transforms import (
    Compose,
    Jitter,
    NormalizeUnitSphere,
    PointDropout,
    RandomRotate,
    RandomRotateSO3,
    RandomScaleTranslate,
    Shuffle,
    Subsample,
    pointmlp_augmentation,
)
from pointset.ops import fps_dense


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def clouds() -> torch.Tensor:
    return torch.randn(4, 64, 3, generator=gen(1))


ALL = [
    RandomScaleTranslate(),
    RandomRotate(),
    RandomRotateSO3(),
    Jitter(),
    PointDropout(),
    NormalizeUnitSphere(),
    Shuffle(),
    Subsample(16),
    Subsample(16, "fps", random_start=True),
    pointmlp_augmentation(),
]


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_same_generator_state_same_result(t, clouds):
    a, b = t(clouds, generator=gen(5)), t(clouds, generator=gen(5))
    assert torch.equal(a, b) and a.dtype == clouds.dtype
    one = t(clouds[0], generator=gen(5))
    assert one.dim() == 2 and one.size(-1) == 3


def test_scale_translate_is_pointmlp_recipe(clouds):
    out = RandomScaleTranslate()(clouds, generator=gen(2))
    # x * s + t per cloud and axis: recover s and t from two points of each cloud
    s = (out[:, 1] - out[:, 0]) / (clouds[:, 1] - clouds[:, 0])
    t = out[:, 0] - clouds[:, 0] * s
    assert torch.allclose(out, clouds * s[:, None] + t[:, None], atol=1e-5)
    assert bool((s >= 2 / 3 - 1e-5).all() and (s <= 1.5 + 1e-5).all())
    assert bool((t.abs() <= 0.2 + 1e-5).all())
    assert not torch.allclose(s[0], s[1])  # one draw per cloud


def test_rotate_about_up_axis_keeps_height_and_norms(clouds):
    out = RandomRotate(axis=1)(clouds, generator=gen(3))
    assert torch.allclose(out[..., 1], clouds[..., 1])
    assert torch.allclose(out.norm(dim=-1), clouds.norm(dim=-1), atol=1e-5)
    quarter = RandomRotate(axis=2, angle=(math.pi / 2, math.pi / 2))
    assert torch.allclose(
        quarter(torch.tensor([[1.0, 0.0, 0.0]])), torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6
    )


def test_so3_rotation_is_orthonormal(clouds):
    out = RandomRotateSO3()(clouds, generator=gen(4))
    gram_in = clouds @ clouds.transpose(1, 2)
    assert torch.allclose(out @ out.transpose(1, 2), gram_in, atol=1e-4)


def test_jitter_is_clipped(clouds):
    out = Jitter(sigma=1.0, clip=0.05)(clouds, generator=gen())
    assert float((out - clouds).abs().max()) <= 0.05 + 1e-6


def test_dropout_copies_first_point(clouds):
    out = PointDropout(max_ratio=0.8)(clouds, generator=gen(7))
    changed = (out != clouds).any(-1)
    assert bool((out[changed] == out[:, :1].expand_as(out)[changed]).all())
    assert out.shape == clouds.shape and bool(changed.any())


def test_normalize_unit_sphere(clouds):
    out = NormalizeUnitSphere()(clouds * 7 + 3)
    assert torch.allclose(out.mean(1), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(out.norm(dim=-1).amax(1), torch.ones(4))


def test_shuffle_is_a_permutation_per_cloud(clouds):
    out = Shuffle()(clouds, generator=gen(8))
    for a, b in zip(out, clouds):
        assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])
    assert not torch.equal(out, clouds)


def test_subsample(clouds):
    out = Subsample(16, "fps")(clouds)
    idx = fps_dense(clouds, 16)
    assert torch.equal(out, torch.gather(clouds, 1, idx[..., None].expand(-1, -1, 3)))
    rnd = Subsample(16)(clouds, generator=gen())
    assert rnd.shape == (4, 16, 3)
    assert len({tuple(p) for p in rnd[0].tolist()}) == 16  # without replacement
    with pytest.raises(ValueError, match="cannot keep 65 points"):
        Subsample(65)(clouds)


def test_random_start_fps_is_fps_from_that_start(clouds):
    out = Subsample(8, "fps", random_start=True)(clouds, generator=gen(9))
    for cloud, picked in zip(clouds, out):
        start = int((cloud == picked[0]).all(-1).nonzero()[0, 0])
        moved = torch.cat([cloud[start : start + 1], cloud[:start], cloud[start + 1 :]])
        ref = moved[fps_dense(moved[None], 8)[0]]
        assert torch.equal(picked, ref)


def test_point_set_selection_moves_every_per_point_attribute():
    pos = torch.randn(10, 3, generator=gen())
    ps = PointSet(x=pos * 10, pos=pos, pixel=torch.arange(20).view(10, 2), y=torch.tensor([3]))
    out = Shuffle()(ps, generator=gen(1))
    assert torch.equal(out.x, out.pos * 10) and out.y.tolist() == [3]
    assert torch.equal(out.pixel[:, 0] // 2, (out.pos[:, None] == pos).all(-1).int().argmax(1))
    moved = RandomScaleTranslate()(ps, generator=gen())
    assert torch.equal(moved.x, ps.x) and not torch.equal(moved.pos, ps.pos)
    assert torch.equal(ps.pos, pos)  # the input is not modified


def test_point_set_grid_record_dropped_on_subsample():
    from pointset import from_image

    ps = from_image(torch.rand(3, 4, 4))
    out = Subsample(5)(ps, generator=gen())
    assert out.num_points == 5 and out.grid_size is None


def test_compose_and_errors(clouds):
    t = Compose([RandomRotate(), Shuffle()])
    g = gen(1)
    expected = Shuffle()(RandomRotate()(clouds, g), g)
    assert torch.equal(t(clouds, gen(1)), expected)
    assert "RandomRotate" in repr(t)
    with pytest.raises(ValueError, match=r"\[N, D\] or \[B, N, D\]"):
        Shuffle()(torch.zeros(3))
    with pytest.raises(ValueError, match="one cloud per PointSet"):
        Jitter()(PointSet(pos=torch.zeros(4, 3), batch=torch.tensor([0, 0, 1, 1])))
    with pytest.raises(ValueError, match="axis"):
        RandomRotate(axis=3)


# -- dense labels ----------------------------------------------------------------------


def _tagged(b=3, n=40, seed=0):
    """Points whose 4th channel is their original index; labels = index % 5 (so a label can
    be checked against the point it travels with)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(b, n, 3, generator=g)
    idx = torch.arange(n, dtype=torch.float32).expand(b, n)
    return torch.cat([pos, idx.unsqueeze(-1), torch.rand(b, n, 2, generator=g)], -1), (
        idx.long() % 5
    )


@pytest.mark.parametrize(
    "t",
    [Shuffle(), Subsample(17), Subsample(9, method="fps", random_start=True), PointDropout(0.5)],
)
def test_reordering_transforms_keep_labels_with_points(t):
    """Oracle: the tag channel names the source point; its label must follow."""
    points, labels = _tagged()
    out, lab = t.with_labels(points, labels, torch.Generator().manual_seed(1))
    src = out[..., 3].long()
    assert torch.equal(lab, src % 5)
    orig = torch.gather(points, 1, src.unsqueeze(-1).expand(-1, -1, points.size(-1)))
    assert torch.equal(out, orig)  # whole rows moved (xyz and features)


@pytest.mark.parametrize("t", [RandomRotate(axis=1), RandomScaleTranslate(), Jitter()])
def test_moving_transforms_change_xyz_only(t):
    """Same draws as on the xyz alone; features and labels untouched."""
    points, labels = _tagged()
    out, lab = t.with_labels(points, labels, torch.Generator().manual_seed(2))
    ref = t(points[..., :3].clone(), torch.Generator().manual_seed(2))
    assert torch.equal(out[..., :3], ref) and torch.equal(out[..., 3:], points[..., 3:])
    assert torch.equal(lab, labels)


def test_compose_and_single_cloud_and_pointset():
    points, labels = _tagged()
    aug = Compose([RandomScaleTranslate(), Shuffle(), Jitter(), PointDropout(0.3)])
    out, lab = aug.with_labels(points[0], labels[0], torch.Generator().manual_seed(3))
    assert out.shape == (40, 6) and torch.equal(lab, out[:, 3].long() % 5)
    ps = PointSet(pos=points[0, :, :3], x=points[0, :, 3:], y=labels[0])
    for t in (Shuffle(), PointDropout(0.5), Subsample(10)):
        item = t(ps, torch.Generator().manual_seed(4))
        assert torch.equal(item.y, item.x[:, 0].long() % 5)
    with pytest.raises(ValueError, match="labels must have shape"):
        Shuffle().with_labels(points, labels[:, :3])
