"""Tests for pointset/models/coc.py beyond the official fixture: feature pyramids, input
padding, and the point-set (general) path.

Oracles: the dense grid computation of the same weights (``forward`` on images), the
convolution arithmetic of the official model, and per-cloud independence of batched
point sets.
"""

from __future__ import annotations

import pytest
import torch

from pointset import PointSet, coc_input, from_image, from_rgbd
from pointset.models import create_model, model_card
from pointset.models.coc import ContextClusterNet

SMALL = dict(
    layers=[1, 1, 1, 1], embed_dims=[8, 16, 16, 24], heads=[2, 2, 2, 2], head_dim=[4, 4, 4, 4]
)


def small(name: str = "coc_tiny", seed: int = 0, **kwargs) -> ContextClusterNet:
    torch.manual_seed(seed)
    return create_model(name, num_classes=5, **{**SMALL, **kwargs}).eval()


def unpadded_logits(model: ContextClusterNet, img: torch.Tensor) -> torch.Tensor:
    """The official computation: no padding, no cropping."""
    x = model.patch_embed.forward_dense(coc_input(img))
    for module in model.network:  # reducers through forward_dense, stages as they are
        x = getattr(module, "forward_dense", module)(x)
    return model.head(model.norm.forward_dense(x).mean(dim=(-2, -1)))


@pytest.mark.parametrize("name", ["coc_tiny", "coc_tiny_plain", "coc_small", "coc_medium"])
def test_published_configs_pad_only_sizes_the_official_model_rejects(name):
    with torch.device("meta"):  # sizes only
        model = create_model(name)
    assert model.padded_size(224, 224) == (224, 224)
    assert model.padded_size(256, 256) == (256, 256)
    plain = name == "coc_tiny_plain"  # no fold regions: every size is accepted
    assert model.padded_size(240, 240) == ((240, 240) if plain else (256, 256))
    assert model.padded_size(240, 224) == ((240, 224) if plain else (256, 224))
    assert model.stage_sizes(240, 240) == [(60, 60), (30, 30), (15, 15), (8, 8)]


@pytest.mark.parametrize("size", [224, 256])
def test_official_sizes_equal_the_unpadded_computation(size):
    model = small()
    img = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(img), unpadded_logits(model, img))


def test_240_is_padded_bottom_right_and_cropped_back():
    model = small()
    img = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        logits = model(img)
        stem = model.forward_embeddings(img)
        maps = small(features_only=True)(img)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    # the stem sees the padded 256 x 256 input; its first 60 x 60 outputs see only real pixels
    assert stem.shape[-2:] == (64, 64)
    with torch.no_grad():
        real = model.patch_embed.forward_dense(coc_input(img))
    torch.testing.assert_close(stem[..., :60, :60], real, atol=0, rtol=0)
    # the feature maps are cropped to the unpadded sizes
    assert [tuple(m.shape[-2:]) for m in maps] == [(60, 60), (30, 30), (15, 15), (8, 8)]


def test_padding_keeps_real_positions_and_extends_them():
    from pointset.models.coc import _pad_coc_input

    inp = coc_input(torch.randn(1, 3, 5, 7))
    padded = _pad_coc_input(inp, 8, 9)
    assert torch.equal(padded[..., :5, :7], inp)
    assert torch.equal(padded[:, :3, 5:], torch.zeros(1, 3, 3, 9))
    assert torch.allclose(padded[0, 3, :, 0], torch.arange(8.0) / 4 - 0.5)
    assert torch.allclose(padded[0, 4, 0], torch.arange(9.0) / 6 - 0.5)


def test_features_only_returns_four_normalised_stage_maps_at_224():
    model = small(features_only=True)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [
        (1, 8, 56, 56),
        (1, 16, 28, 28),
        (1, 16, 14, 14),
        (1, 24, 7, 7),
    ]
    assert "head.weight" not in model.state_dict() and "norm6.weight" in model.state_dict()
    for m in maps:  # GroupNorm(1, C) with identity affine: zero mean per sample
        assert m.mean().abs() < 1e-5


@pytest.mark.parametrize("channels", ["rgb", "coc_input"])
def test_point_path_on_all_pixels_equals_grid_path(channels):
    model = small()
    img = torch.randn(2, 3, 64, 64)
    points = from_image(img) if channels == "rgb" else from_image(coc_input(img))
    with torch.no_grad():
        dense = model(img)
        auto = model.forward_points(points)
        via_forward = model(points)
    torch.testing.assert_close(auto, dense, atol=1e-4, rtol=0)
    assert torch.equal(via_forward, auto)


def test_published_coc_tiny_point_path_equals_grid_path_at_224():
    torch.manual_seed(0)
    model = create_model("coc_tiny", num_classes=10).eval()
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_points(from_image(img), plan="grid"), model(img), atol=1e-4, rtol=0
        )


def test_point_path_features_equal_dense_maps():
    model = small(features_only=True)
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model(img)
        stages = model.forward_points(from_image(img))
    for dense, points in zip(maps, stages):
        c, h, w = dense.shape[1:]
        assert points.x.shape == (h * w, c)
        torch.testing.assert_close(points.x, dense[0].flatten(1).t(), atol=1e-4, rtol=0)
        assert points.pos[-1].tolist() == [h - 1, w - 1]


def masked(img: torch.Tensor, seed: int) -> PointSet:
    """Pixels of ``img`` without a random 60% and without a square hole per image (so that
    the stage lattices are not full either)."""
    points = from_image(img)
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(points.num_points, generator=gen) < 0.6
    row, col = points.pos.long().unbind(1)
    start = 4 + 8 * points.batch  # image b loses rows/cols [start, start + 12)
    hole = (row >= start) & (row < start + 12) & (col >= start) & (col < start + 12)
    return points.subgraph(keep & ~hole)


def test_masked_pixels_run_through_fps_plan_and_clouds_are_independent():
    model = small()
    img = torch.randn(2, 3, 32, 32)
    batch = masked(img, seed=1)
    with torch.no_grad():
        both = model.forward_points(batch)
        sizes = batch.cloud_sizes().tolist()
        x, pixel = batch.x.split(sizes), batch.pos.split(sizes)
        alone = [
            model.forward_points(PointSet(x=x[i], pos=pixel[i]), image_size=(32, 32))
            for i in range(2)
        ]
    assert both.shape == (2, 5) and torch.isfinite(both).all()
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="grid plan needs whole images"):
        model.forward_points(batch, plan="grid")


def test_fps_plan_on_whole_images_and_training_gradients():
    model = small().train()
    points = from_image(torch.randn(1, 3, 32, 32))
    out = model.forward_points(points, plan="fps")
    out.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None
    assert model.network[0][0].token_mixer.f.weight.grad.abs().sum() > 0


def test_valid_pixels_of_an_rgbd_frame():
    model = small()
    gen = torch.Generator().manual_seed(0)
    color = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=gen)
    depth = torch.randint(500, 2500, (40, 48), generator=gen).to(torch.int32)
    depth[10:25, 5:30] = 0  # a hole of invalid depth
    frame = from_rgbd(color, depth)
    with torch.no_grad():
        logits = model.forward_points(frame, image_size=(40, 48))
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


def test_point_input_errors_name_the_problem():
    model = small()
    img = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="integer"):
        model.forward_points(from_image(img, normalize=True).subgraph(torch.arange(100)))
    with pytest.raises(ValueError, match="colour channels"):
        model.forward_points(PointSet(x=torch.randn(4, 4), pos=torch.rand(4, 2).mul(9).round()))
    with pytest.raises(ValueError, match="appears twice"):
        model.forward_points(PointSet(x=torch.randn(4, 3), pos=torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="outside its image"):
        model.forward_points(from_image(img), image_size=(16, 16))
    with pytest.raises(ValueError, match="plan must be"):
        model.forward_points(from_image(img), plan="kmeans")
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(3, 32, 32))


def _mixers(model: ContextClusterNet) -> list:
    return [m for m in model.modules() if type(m).__name__ == "ContextCluster"]


def test_denominator_reaches_every_block():
    """Oracle: the ContextCluster layer's own ``denominator`` (tested against the official
    aggregation in tests/nn); the model must hand the argument to all 14 blocks and the
    output must change with it."""
    count = small(denominator="count")
    sim = small()
    assert len(_mixers(count)) == 4 and {m.denominator for m in _mixers(count)} == {"count"}
    assert {m.denominator for m in _mixers(sim)} == {"sim"}
    full = create_model("coc_tiny", denominator="count")
    assert len(_mixers(full)) == 14 and {m.denominator for m in _mixers(full)} == {"count"}
    img = torch.rand(2, 3, 64, 64)
    plain = dict(use_layer_scale=False)  # layer scales of 1e-5 would hide the difference
    with torch.no_grad():
        diff = small(denominator="count", **plain)(img) - small(**plain)(img)
    assert float(diff.abs().max()) > 1e-3
    with pytest.raises(ValueError, match="denominator must be 'sim' or 'count', got 'mean'"):
        small(denominator="mean")


@pytest.mark.parametrize("base", ["coc_tiny", "coc_tiny_plain", "coc_small", "coc_medium"])
def test_each_checkpoint_generation_has_its_denominator(base):
    """Oracle: the official history: checkpoints released before 2023-05-31 were trained
    with the count denominator (``*_v1``), the current ones with the sim-sum one."""
    current, first = model_card(base), model_card(f"{base}_v1")
    assert current.config["denominator"] == "sim" and first.config["denominator"] == "count"
    assert {k: v for k, v in first.config.items() if k != "denominator"} == {
        k: v for k, v in current.config.items() if k != "denominator"
    }
    assert current.default_cfg["url"] != first.default_cfg["url"]
    assert current.reported[0].metrics["top1"] > first.reported[0].metrics["top1"]
    torch.manual_seed(0)
    v1 = create_model(f"{base}_v1", num_classes=5, **SMALL).eval()
    torch.manual_seed(0)
    by_argument = create_model(base, num_classes=5, denominator="count", **SMALL).eval()
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(v1(img), by_argument(img), rtol=0, atol=0)


def test_torch_export_reproduces_eager_logits():
    """Oracle: the eager model. ``torch.export`` captures the CoC image path (fixed-size
    regions, no data-dependent sizes) as one graph; the exported program must give the same
    logits, also on another input of the traced size."""
    model = small()
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        program = torch.export.export(model, (img,))
        other = torch.rand(2, 3, 64, 64)
        torch.testing.assert_close(program.module()(other), model(other), rtol=0, atol=0)
