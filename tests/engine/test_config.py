"""pointset.engine.config: YAML -> typed config, overrides, and the errors users see."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pointset.engine.config import ConfigError, apply_overrides, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {"model": {"name": "pointmlp_elite"}, "data": {"name": "synthetic_shapes"}}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_fill_missing_keys():
    cfg = config_from_dict(MINIMAL)
    assert cfg.train.optimizer == "sgd" and cfg.train.lr == 0.01
    assert cfg.train.label_smoothing == 0.2 and cfg.seed == 0
    assert cfg.to_dict()["model"]["name"] == "pointmlp_elite"


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = write(
        tmp_path,
        """
        model: {name: pointmlp_elite}
        data: {name: synthetic_shapes}
        output_dir: runs/x
        """,
    )
    cfg = load_config(
        path,
        ["train.epochs=3", "train.lr=1e-3", "data.augment=[shuffle]", "model.options.points=256",
         "train.grad_clip=null", "output_dir=runs/y"],
    )  # fmt: skip
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001
    assert cfg.data.augment == ["shuffle"]
    assert cfg.model.options == {"points": 256}
    assert cfg.train.grad_clip is None and cfg.output_dir == "runs/y"


def test_int_is_accepted_for_float():
    cfg = config_from_dict({**MINIMAL, "train": {"lr": 1}})
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {**MINIMAL, "train": {"epoch": 3}},
            "unknown config key 'train.epoch'; valid keys in train: epochs",
        ),
        (
            {**MINIMAL, "optimiser": "sgd"},
            "unknown config key 'optimiser'; valid keys in the config: model, data",
        ),
        ({"data": {"name": "synthetic_shapes"}}, "config key 'model' is missing"),
        (
            {**MINIMAL, "train": {"epochs": "ten"}},
            "config key 'train.epochs' must be int, got str 'ten'",
        ),
        ({**MINIMAL, "train": {"epochs": 2.5}}, "'train.epochs' must be int, got float 2.5"),
        ({**MINIMAL, "train": {"progress": "yes"}}, "'train.progress' must be bool"),
        (
            {**MINIMAL, "train": {"optimizer": "adam"}},
            "must be one of 'sgd', 'adamw', got str 'adam'",
        ),
        ({**MINIMAL, "train": {"epochs": 0}}, "'train.epochs' has an invalid value 0"),
        ({**MINIMAL, "data": {"name": "mnist"}}, "'data.name' must be one of"),
        ({**MINIMAL, "data": "synthetic_shapes"}, "data must be a mapping"),
        (
            {**MINIMAL, "data": {"name": "digits", "augment": "shuffle"}},
            "'data.augment' must be list of str",
        ),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(raw)
    assert message in str(info.value)


def test_unknown_key_through_override(tmp_path):
    path = write(tmp_path, "model: {name: pointmlp}\ndata: {name: scanobjectnn}\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'"):
        load_config(path, ["train.epochz=1"])


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train..lr=1", "train.lr=[1"])
def test_bad_override(text):
    with pytest.raises(ConfigError, match="override"):
        apply_overrides({}, [text])


def test_override_into_scalar_fails():
    with pytest.raises(ConfigError, match="'output_dir' is not a section"):
        apply_overrides({"output_dir": "x"}, ["output_dir.sub=1"])


def test_base_inheritance_merges_mappings(tmp_path):
    write(
        tmp_path,
        "data: {name: scanobjectnn, batch_size: 8, options: {variant: OBJ_BG}}\n",
        "b.yaml",
    )
    path = write(tmp_path, "base: b.yaml\nmodel: {name: pointmlp}\ndata: {num_points: 512}\n")
    cfg = load_config(path)
    assert cfg.data.batch_size == 8 and cfg.data.num_points == 512
    assert cfg.data.options == {"variant": "OBJ_BG"}


def test_base_cycle_and_missing_file(tmp_path):
    path = write(tmp_path, "base: cfg.yaml\n")
    with pytest.raises(ConfigError, match="inherits itself"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_one_line(tmp_path):
    path = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_shipped_configs_validate():
    files = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_"))
    assert files
    for path in files:
        load_config(path)


@pytest.mark.parametrize("value", [0, -3])
def test_num_classes_below_one_is_rejected(value):
    """Oracle: the documented meaning (``None``/omitted takes the dataset's count). 0 used to
    fall through ``num_classes or len(classes)`` and silently mean the dataset's count."""
    raw = {**MINIMAL, "model": {"name": "pointmlp_elite", "num_classes": value}}
    with pytest.raises(ConfigError, match=f"'model.num_classes' has an invalid value {value}"):
        config_from_dict(raw)
    assert config_from_dict(MINIMAL).model.num_classes is None


def test_dataset_names_come_from_the_loaders():
    """Oracle: the loader tables of engine/data.py and engine/segmentation.py: every loader
    name is a valid ``data.name`` and the error for another name lists exactly them."""
    from pointset.engine.data import DATASETS
    from pointset.engine.segmentation import SEG_DATASETS

    names = [*DATASETS, *SEG_DATASETS]
    assert len(set(names)) == len(names) == 8
    for name in names:
        assert config_from_dict({**MINIMAL, "data": {"name": name}}).data.name == name
    with pytest.raises(ConfigError) as info:
        config_from_dict({**MINIMAL, "data": {"name": "mnist"}})
    listed = ", ".join(repr(n) for n in names)
    assert str(info.value) == f"config key 'data.name' must be one of {listed}, got str 'mnist'"
