"""Experiment configs: YAML files validated into typed dataclasses.

A config has three sections and three top-level keys::

    model:  {name: pointmlp_elite, options: {points: 512}}
    data:   {name: synthetic_shapes, root: data/synthetic_shapes, batch_size: 32}
    train:  {epochs: 40, optimizer: sgd, lr: 0.01}
    output_dir: runs/demo
    seed: 0
    task: classification   # or segmentation (per-point labels)

``base: other.yaml`` (a path relative to the config file) inherits another config; the
file's own keys are merged over it, mapping by mapping. Command-line overrides
(``--set train.epochs=1``) are parsed as YAML values and applied before validation, so a
misspelt key is reported the same way wherever it comes from.

Every mistake raises :class:`ConfigError` (a ``ValueError``) naming the dotted key: unknown
keys list the valid ones, wrong types name the expected type and the value given.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence

import yaml

from .data import DATASETS
from .segmentation import SEG_DATASETS

#: Every valid ``data.name``: the names of the loaders in
#: :data:`pointset.engine.data.DATASETS` (classification) and
#: :data:`pointset.engine.segmentation.SEG_DATASETS` (segmentation).
DatasetName = Literal[tuple(DATASETS) + tuple(SEG_DATASETS)]


class ConfigError(ValueError):
    """An invalid experiment config (unknown key, wrong type, bad value, unreadable file)."""


@dataclass
class ModelConfig:
    """Which network to train.

    Attributes:
        name: a model name of :func:`pointset.models.create_model` (e.g. ``pointmlp_elite``).
        num_classes: classifier outputs; ``None`` takes the dataset's class count.
        checkpoint: weights to start from (a checkpoint file accepted by ``create_model``).
        options: extra constructor arguments of the model (e.g. ``{points: 512}``).
    """

    name: str
    num_classes: Optional[int] = None  # noqa: UP045 (evaluated by get_type_hints on 3.9)
    checkpoint: Optional[str] = None  # noqa: UP045 (evaluated by get_type_hints on 3.9)
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which dataset, how it is sampled and batched.

    Attributes:
        name: a dataset of :data:`DatasetName`, i.e. a classification loader of
            :data:`pointset.engine.data.DATASETS` or a segmentation loader of
            :data:`pointset.engine.segmentation.SEG_DATASETS`.
        root: folder holding (or receiving, for ``synthetic_shapes``) the dataset files.
        num_points: points per sample for point datasets.
        image_size: side of the square images fed to image models (``digits``).
        options: extra constructor arguments of the dataset (e.g. ``{variant: PB_T50_RS}``).
        augment: train-time transforms, applied in this order; see
            :data:`pointset.engine.data.AUGMENTATIONS`.
        batch_size: samples per optimisation step, summed over all processes.
        eval_batch_size: samples per evaluation batch, summed over all processes.
        drop_last: drop the last incomplete training batch of each epoch.
        val_split: fraction of the training split held out (seeded by ``seed``) to choose
            the ``best`` checkpoint on; the test split is then evaluated once, for ``best``.
            ``None`` chooses ``best`` on the test split, as the official PointMLP scripts do.
    """

    name: DatasetName
    root: str = "data"
    num_points: int = 1024
    image_size: int = 32
    options: Dict[str, Any] = field(default_factory=dict)
    augment: List[str] = field(default_factory=list)
    batch_size: int = 32
    eval_batch_size: int = 64
    drop_last: bool = True
    val_split: Optional[float] = None  # noqa: UP045 (evaluated by get_type_hints on 3.9)


@dataclass
class TrainConfig:
    """Optimisation, schedule and run-time settings.

    Attributes:
        epochs: training epochs.
        optimizer: ``sgd`` (with ``momentum``) or ``adamw`` (with ``betas``).
        lr, momentum, weight_decay, betas: optimizer settings.
        schedule: ``cosine`` (to ``lr * min_lr_ratio``), ``step`` (times ``gamma`` every
            ``step_size`` epochs, floored at ``lr * min_lr_ratio``) or ``constant``.
        min_lr_ratio: final learning rate of the cosine (floor of the step decay) as a
            fraction of ``lr``.
        step_size, gamma: epochs between decays and decay factor of ``schedule: step``.
        warmup_epochs: linear warm-up length (may be fractional); 0 disables it.
        schedule_unit: ``epoch`` changes the rate once per epoch (PointMLP's recipe),
            ``step`` after every batch.
        label_smoothing: epsilon of PointMLP's smoothed cross-entropy; 0 is plain CE.
        grad_clip: clip the gradient norm to this value (> 0); ``None`` disables clipping.
        eval_every: evaluate every this many epochs (and always after the last one).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: CPU threads for torch (>= 1); ``None`` leaves torch's default.
        progress: show progress bars (only when the output is a terminal).
        deterministic: ask torch for deterministic kernels (slower on GPU).
    """

    epochs: int = 200
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    min_lr_ratio: float = 0.01
    step_size: int = 30
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    schedule_unit: Literal["epoch", "step"] = "epoch"
    label_smoothing: float = 0.2
    grad_clip: Optional[float] = None  # noqa: UP045 (evaluated by get_type_hints on 3.9)
    eval_every: int = 1
    device: str = "auto"
    threads: Optional[int] = None  # noqa: UP045 (evaluated by get_type_hints on 3.9)
    progress: bool = True
    deterministic: bool = False


@dataclass
class Config:
    """A full experiment: ``model``, ``data``, ``train``, ``output_dir``, ``seed`` and
    ``task`` (``classification``: a class per sample; ``segmentation``: a class per point,
    see :mod:`pointset.engine.segmentation`)."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    seed: int = 0
    task: Literal["classification", "segmentation"] = "classification"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML / JSON serialisable)."""
        return dataclasses.asdict(self)


# -- checks ----------------------------------------------------------------------------

_CHECKS = {
    ("train", "epochs"): lambda v: v >= 1,
    ("train", "lr"): lambda v: v > 0,
    ("train", "grad_clip"): lambda v: v > 0,
    ("train", "threads"): lambda v: v >= 1,
    ("train", "device"): lambda v: _DEVICE.fullmatch(v) is not None,
    ("data", "val_split"): lambda v: 0 < v < 1,
    ("train", "min_lr_ratio"): lambda v: 0 <= v <= 1,
    ("train", "step_size"): lambda v: v >= 1,
    ("train", "gamma"): lambda v: 0 < v <= 1,
    ("train", "warmup_epochs"): lambda v: v >= 0,
    ("train", "label_smoothing"): lambda v: 0 <= v < 1,
    ("train", "eval_every"): lambda v: v >= 1,
    ("train", "betas"): lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
    ("data", "num_points"): lambda v: v >= 1,
    ("data", "image_size"): lambda v: v >= 4,
    ("data", "batch_size"): lambda v: v >= 1,
    ("data", "eval_batch_size"): lambda v: v >= 1,
    ("model", "num_classes"): lambda v: v >= 1,  # None (omitted) takes the dataset's count
}


_HINTS = {
    ("train", "lr"): "must be > 0",
    ("train", "grad_clip"): "must be > 0 (null disables clipping)",
    ("train", "threads"): "must be >= 1 (null keeps torch's default)",
    ("train", "device"): "must be auto, cpu, cuda, cuda:N or mps",
    ("data", "val_split"): "must be a fraction between 0 and 1 (null: no validation split)",
}

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(
        f"config key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Validate the mapping ``raw`` into the dataclass ``cls``; ``prefix`` names it."""
    where = prefix or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    valid = ", ".join(fields)
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key '{dotted}'; valid keys in {where}: {valid}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise ConfigError(f"config key '{dotted}' is missing")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], dotted)
            continue
        value = _coerce(raw[name], tp, dotted)
        check = _CHECKS.get((prefix, name))
        if check is not None and value is not None and not check(value):
            hint = _HINTS.get((prefix, name))
            raise ConfigError(
                f"config key '{dotted}' has an invalid value {value!r}"
                + (f"; it {hint}" if hint else "")
            )
        kwargs[name] = value
    return cls(**kwargs)


# -- loading ---------------------------------------------------------------------------


def _merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
    """Read a config file, resolving its ``base:`` chain."""
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"config {path} inherits itself through 'base'")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        line = str(exc).replace("\n", " ")
        raise ConfigError(f"config file {path} is not valid YAML: {line}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start})"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config key 'base' in {path} must be a path, got {base!r}")
    parent = _read_yaml(os.path.join(os.path.dirname(path), base), (*seen, path))
    return _merge(parent, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=1"`` -> ``(["train", "epochs"], 1)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r} has a value that is not valid YAML") from None
    return [p.strip() for p in parts], parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.path=value`` overrides to a raw config mapping (returns a new mapping)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: '{dotted}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def config_from_dict(raw: dict) -> Config:
    """Validate a raw nested mapping into a :class:`Config`."""
    return _build(Config, raw, "")


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read the YAML config at ``path``, apply ``overrides`` and validate it.

    Example:
        >>> cfg = load_config("configs/demo/pointmlp_elite.yaml", ["train.epochs=1"])
        >>> cfg.train.epochs
        1
    """
    raw = apply_overrides(_read_yaml(os.fspath(path)), overrides)
    return config_from_dict(raw)
