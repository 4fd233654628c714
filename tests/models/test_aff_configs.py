"""Tests of the AutoFocusFormer registry entries in pointset/models/aff.py.

Oracle: the official ``configs/<name>.yaml`` files (with the ``config.py`` defaults for
what a file leaves out) and the model-zoo tables of the official README, copied by hand
below: every official config is registered under its own name with exactly its values,
its checkpoint file and its published numbers.
"""

from __future__ import annotations

import pytest
import torch

from pointset.models import create_model, list_models, model_card

_WEIGHTS = "https://docs-assets.developer.apple.com/ml-research/models/aff/classification/"
_MINI = dict(
    embed_dim=[32, 128, 256, 384], depths=[2, 2, 6, 2], num_heads=[2, 4, 8, 16], mlp_ratio=2.0
)
_TINY = dict(
    embed_dim=[64, 128, 256, 512], depths=[3, 4, 18, 5], num_heads=[2, 4, 8, 16], mlp_ratio=3.0
)
_SMALL = dict(
    embed_dim=[96, 192, 384, 768], depths=[3, 4, 18, 2], num_heads=[3, 6, 12, 24], mlp_ratio=3.0
)
_BASE = dict(
    embed_dim=[128, 256, 512, 1024], depths=[3, 4, 18, 2], num_heads=[4, 8, 16, 32], mlp_ratio=3.0
)
_LOCAL = dict(cluster_size=8, nbhd_size=[48, 48, 48, 49], alpha=4.0)
_WIDE = dict(cluster_size=24, nbhd_size=[144, 144, 144, 144], alpha=4.0)

#: name -> (architecture, drop_path, layer_scale, cluster/neighbourhood, ds_rate, img_size,
#:          classes, checkpoint file, (top-1, top-5))
OFFICIAL = {
    "aff_mini": (_MINI, 0.0, 0.0, _LOCAL, 0.25, 224, 1000, "aff_mini.pth", (78.2, 93.6)),
    "aff_mini_1_5th": (
        _MINI, 0.0, 0.0, _LOCAL, 0.2, 224, 1000, "aff_mini_1_5th.pth", (77.5, 93.3)
    ),
    "aff_tiny": (_TINY, 0.2, 0.0, _LOCAL, 0.25, 224, 1000, "aff_tiny.pth", (83.0, 96.3)),
    "aff_tiny_1_5th": (
        _TINY, 0.2, 0.0, _LOCAL, 0.2, 224, 1000, "aff_tiny_1_5th.pth", (82.4, 95.9)
    ),
    "aff_small": (_SMALL, 0.3, 1e-5, _LOCAL, 0.25, 224, 1000, "aff_small.pth", (83.5, 96.6)),
    "aff_small_1_5th": (
        _SMALL, 0.3, 1e-5, _LOCAL, 0.2, 224, 1000, "aff_small_1_5th.pth", (83.4, 96.5)
    ),
    "aff_base_22k": (_BASE, 0.2, 1e-5, _LOCAL, 0.25, 224, 10450, "aff_base_22k.pth", None),
    "aff_base_22kto1k": (_BASE, 0.2, 1e-5, _LOCAL, 0.25, 224, 1000, None, None),
    "aff_base_22kto1k_384": (
        _BASE, 0.2, 1e-5, _WIDE, 0.25, 384, 1000, "aff_base_22kto1k_384.pth", (86.2, 98.0)
    ),
}  # fmt: skip

#: README "#params" column, at the README's precision.
PARAMS_M = {"aff_mini": (6.75, 2), "aff_tiny": (27, 0), "aff_small": (42.6, 1)}
PARAMS_M["aff_base_22kto1k_384"] = (75.34, 2)


def test_exactly_the_official_configs_are_registered():
    assert list_models(family="aff") == sorted(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_card_config_equals_official_yaml(name):
    arch, drop_path, layer_scale, local, ds_rate, size, classes, file, acc = OFFICIAL[name]
    card = model_card(name)
    expected = dict(
        arch,
        **local,
        ds_rate=ds_rate,
        reserve_on=True,
        drop_path_rate=drop_path,
        layer_scale=layer_scale,
    )
    assert dict(card.config) == expected
    assert card.input_size == (3, size, size)
    assert card.num_classes == classes
    assert card.default_cfg.get("url") == (None if file is None else _WEIGHTS + file)
    if acc is None:
        assert card.reported == ()
    else:
        (result,) = card.reported
        assert (result.metrics["top1"], result.metrics["top5"]) == acc
        assert result.dataset == "ImageNet-1K val"
        assert f"{size}x{size}" in result.setting


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_built_model_runs_with_the_official_values(name):
    """The values the computation uses (not only the card) are the official ones."""
    _, _, _, local, ds_rate, _, classes, _, _ = OFFICIAL[name]
    with torch.device("meta"):  # shapes and attributes only
        model = create_model(name)
    assert model.head.out_features == classes
    for i, stage in enumerate(model.layers):
        assert stage.cluster_size == local["cluster_size"]
        assert stage.nbhd_size == local["nbhd_size"][i]
        if stage.downsample is not None:
            assert stage.downsample.ratio == ds_rate
            assert stage.downsample.cluster_size == local["cluster_size"]
    params = sum(p.numel() for p in model.parameters())
    assert params == model_card(name).default_cfg["param_count"]
    if name in PARAMS_M:
        value, digits = PARAMS_M[name]
        assert round(params / 1e6, digits) == value


def test_old_unofficial_name_is_gone():
    """``aff_base`` ran the 384 checkpoint with the 224 neighbourhoods; it is not an
    official name and is not registered any more."""
    with pytest.raises(ValueError, match="unknown model 'aff_base'"):
        create_model("aff_base")
