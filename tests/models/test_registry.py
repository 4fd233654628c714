"""Tests for pointset/models/registry.py (oracle: the model factories and the published
numbers in the official READMEs / papers)."""

from __future__ import annotations

import pytest
import torch

import pointset.models as models
from pointset.models import (
    ModelCard,
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_card,
)
from pointset.models.registry import register_model

#: Official AutoFocusFormer configs (``configs/<name>.yaml``) with a published number.
AFF_REPORTED = [
    "aff_base_22kto1k_384",
    "aff_mini",
    "aff_mini_1_5th",
    "aff_small",
    "aff_small_1_5th",
    "aff_tiny",
    "aff_tiny_1_5th",
]
AFF_ALL = sorted([*AFF_REPORTED, "aff_base_22k", "aff_base_22kto1k"])
COC = [
    "coc_medium",
    "coc_medium_v1",
    "coc_small",
    "coc_small_v1",
    "coc_tiny",
    "coc_tiny_plain",
    "coc_tiny_plain_v1",
    "coc_tiny_v1",
]
PUBLISHED = [
    *AFF_REPORTED,
    *COC,
    "pointmlp",
    "pointmlp_coc",
    "pointmlp_elite",
    "pointmlp_partseg",
]


def test_every_published_model_is_registered():
    assert set(PUBLISHED) <= set(list_models())
    assert list_models() == sorted(list_models())


def test_list_models_filters_by_pattern_and_family():
    assert list_models("coc_*") == COC
    assert list_models("POINTMLP*") == list_models("pointmlp*")
    assert list_models(family="aff") == AFF_ALL
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", PUBLISHED)
def test_cards_carry_config_input_and_reported_numbers(name):
    card = model_card(name)
    assert isinstance(card, ModelCard)
    assert card.name == name and card.family and card.paper.count("arxiv.org") == 1
    assert card.config and card.reported and card.num_classes and card.input_size
    for result in card.reported:
        assert result.dataset and result.source and result.metrics
        assert all(0 < v < 100 for v in result.metrics.values())
    with pytest.raises(TypeError):
        card.config["x"] = 1  # read-only


@pytest.mark.parametrize(
    ("name", "metric", "value"),
    [
        ("coc_tiny", "top1", "73.2"),
        ("coc_tiny_plain", "top1", "73.8"),
        ("coc_small", "top1", "78.1"),
        ("coc_medium", "top1", "81.2"),
        ("coc_tiny_v1", "top1", "71.8"),
        ("coc_tiny_plain_v1", "top1", "72.9"),
        ("coc_small_v1", "top1", "77.5"),
        ("coc_medium_v1", "top1", "81.0"),
        ("pointmlp", "OA", "85.4 ± 0.3"),
        ("pointmlp", "mAcc", "83.9 ± 0.5"),
        ("pointmlp_elite", "OA", "83.8 ± 0.6"),
        ("pointmlp_elite", "mAcc", "81.8 ± 0.8"),
        ("pointmlp_coc", "OA", "86.2"),
        ("pointmlp_coc", "mAcc", "84.4"),
        ("pointmlp_partseg", "instance_mIoU", "86.1"),
        ("pointmlp_partseg", "class_mIoU", "84.6"),
        ("aff_mini", "top1", "78.2"),
        ("aff_mini_1_5th", "top1", "77.5"),
        ("aff_tiny", "top1", "83.0"),
        ("aff_tiny_1_5th", "top1", "82.4"),
        ("aff_small", "top1", "83.5"),
        ("aff_small_1_5th", "top1", "83.4"),
        ("aff_base_22kto1k_384", "top1", "86.2"),
        ("aff_base_22kto1k_384", "top5", "98.0"),
    ],
)
def test_first_reported_result_is_the_headline_number(name, metric, value):
    assert model_card(name).reported[0].format(metric) == value


@pytest.mark.parametrize("name", ["coc_tiny", "coc_tiny_plain", "pointmlp_elite", "aff_mini"])
def test_card_param_count_equals_built_model(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == model_card(name).default_cfg["param_count"]


def test_create_model_equals_factory_and_sets_num_classes():
    torch.manual_seed(0)
    a = create_model("pointmlp_elite", num_classes=15)
    torch.manual_seed(0)
    b = models.pointmlp.pointmlp_elite(num_classes=15)
    assert a.classifier[-1].out_features == 15
    assert a.model_name == "pointmlp_elite" and a.pretrained_cfg["num_classes"] == 15
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_create_model_keeps_default_classes_and_applies_overrides():
    model = create_model("coc_tiny", drop_path_rate=0.1, layers=[1, 1, 1, 1])
    assert model.head.out_features == 1000
    assert [len(s) for s in model.network[::2]] == [1, 1, 1, 1]
    assert create_model("pointmlp").classifier[-1].out_features == 40


def test_create_model_pretrained_cfg_overrides_card_without_changing_it():
    model = create_model("aff_mini", pretrained_cfg={"input_size": (3, 112, 112)})
    assert model.pretrained_cfg["input_size"] == (3, 112, 112)
    assert model_card("aff_mini").input_size == (3, 224, 224)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean: coc_tiny"):
        create_model("coc_tiyn")
    with pytest.raises(UnknownModelError, match="pointmlp_coc"):
        model_card("pointMLP_CoC_x")
    with pytest.raises(ValueError, match="available models: .*aff_base_22k"):
        create_model("zzzzzz")
    assert not is_model("coc_tiyn") and is_model("coc_tiny")


def test_unknown_override_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no_such_arg"):
        create_model("pointmlp_elite", no_such_arg=3)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda num_classes=1: None, input="image", name="coc_tiny")


@pytest.mark.parametrize("num_classes", [-3, -1, 2.5, True, "10"])
def test_bad_num_classes_is_a_value_error_naming_it(num_classes):
    """Oracle: the documented contract (an int >= 0); -3 used to reach nn.Linear."""
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 0.*" + str(num_classes)):
        create_model("pointmlp_elite", num_classes=num_classes)


def test_zero_classes_gives_pooled_features():
    """Oracle: the documented ``num_classes=0`` meaning (no classifier)."""
    model = create_model("coc_tiny", num_classes=0, layers=[1, 1, 1, 1]).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 320)


def test_rgbd_pointmlp_coc_is_registered_with_the_pointmlp_family():
    """Oracle: the published PointMLP-CoC config with six input channels."""
    from pointset.models import pointmlp

    card = model_card("rgbd_pointmlp_coc")
    assert card.factory is pointmlp.rgbd_pointmlp_coc
    assert dict(card.config) == dict(pointmlp.CONFIGS["pointmlp_coc"], in_channels=6)
    assert card.input_size == (6, 1024) and card.family == "pointmlp"


def test_every_card_names_its_input_kind():
    """Oracle: the papers: CoC and AFF classify images, the PointMLP family and the kMaX
    segmenter take point clouds; the card's input_size has the matching rank."""
    for name in list_models():
        card = model_card(name)
        expected = "image" if card.family in ("coc", "aff") else "points"
        assert card.input == expected, name
        assert len(card.input_size) == (3 if expected == "image" else 2), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input="voxels"), "input must be one of points, image; got 'voxels'"),
        (
            dict(input="image", default_cfg=dict(input_size=(3, 1024))),
            r"input_size \(3, 1024\) does not fit input='image'",
        ),
    ],
)
def test_register_model_checks_the_input_kind(kwargs, message):
    """Oracle: the documented contract of ``register_model``; nothing gets registered."""
    before = list_models()
    with pytest.raises(ValueError, match=message):
        register_model(lambda num_classes=1: None, name="not_registered", **kwargs)
    assert list_models() == before
