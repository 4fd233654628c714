"""The model registry: one name per published model, one ``create_model`` to build it.

Model modules register their factory functions with :func:`register_model`; each entry
carries a :class:`ModelCard` with the constructor config, the default input and the paper's
reported numbers, from which the model-zoo table is generated.

Example::

    >>> from pointset.models import create_model, list_models
    >>> list_models("coc_tiny*")
    ['coc_tiny', 'coc_tiny_plain', 'coc_tiny_plain_v1', 'coc_tiny_v1']
    >>> model = create_model("pointmlp_elite", num_classes=15)
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

__all__ = [
    "INPUT_KINDS",
    "ModelCard",
    "Reported",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "model_card",
    "register_model",
]


#: What a model is fed: ``"points"`` (clouds ``[B, C, N]``) or ``"image"`` (``[B, C, H, W]``).
INPUT_KINDS = ("points", "image")


class UnknownModelError(ValueError):
    """A model name that is not registered."""


@dataclass(frozen=True)
class Reported:
    """One published result of a model.

    Attributes:
        dataset: benchmark and split, e.g. ``"ImageNet-1K val"``.
        metrics: metric name -> value in percent, e.g. ``{"top1": 77.5}``; a ``"<name>_std"``
            entry holds the reported standard deviation over runs.
        setting: evaluation setting (resolution, voting, variant), e.g. ``"224x224"``.
        source: where the number is published.
    """

    dataset: str
    metrics: Mapping[str, float]
    setting: str = ""
    source: str = ""

    def format(self, metric: str) -> str:
        """``"85.4 ± 0.3"`` for ``metric`` (empty when not reported)."""
        if metric not in self.metrics:
            return ""
        text = f"{self.metrics[metric]:.1f}"
        std = self.metrics.get(f"{metric}_std")
        return text if std is None else f"{text} ± {std:.1f}"


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about one model.

    Attributes:
        name: registry name (``create_model(name)``).
        family: ``"coc"``, ``"pointmlp"``, ``"aff"``, ...
        input: what the model is fed, one of :data:`INPUT_KINDS`: ``"points"`` (point
            clouds ``[B, C, N]``) or ``"image"`` (images ``[B, C, H, W]``).
        paper: title and link of the paper that introduced the model.
        factory: the function that builds it, ``factory(num_classes=..., **overrides)``.
        config: constructor arguments of the published configuration (read-only).
        default_cfg: input description: ``num_classes``, ``input_size`` (``(C, H, W)`` for
            images, ``(C, N)`` for point clouds), ``mean`` / ``std`` for images, ``url`` of
            the official weights, ``param_count`` of the official model at ``num_classes``.
        reported: published results.
        description: first line of the factory docstring.
    """

    name: str
    family: str
    input: str
    paper: str
    factory: Callable[..., nn.Module] = field(repr=False, compare=False)
    config: Mapping[str, Any] = field(default_factory=dict)
    default_cfg: Mapping[str, Any] = field(default_factory=dict)
    reported: tuple[Reported, ...] = ()
    description: str = ""

    @property
    def num_classes(self) -> int | None:
        return self.default_cfg.get("num_classes")

    @property
    def input_size(self) -> tuple[int, ...] | None:
        return self.default_cfg.get("input_size")


_REGISTRY: dict[str, ModelCard] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    input: str,
    family: str = "",
    paper: str = "",
    config: Mapping[str, Any] | None = None,
    default_cfg: Mapping[str, Any] | None = None,
    reported: Sequence[Reported] = (),
    name: str | None = None,
):
    """Register a model factory under its function name (or ``name``).

    Use as a decorator (``@register_model(input="points", family=...)``) or call it with
    the factory first. ``input`` is required: ``"points"`` or ``"image"``, and when
    ``default_cfg`` gives an ``input_size`` it must match (``(C, N)`` for points,
    ``(C, H, W)`` for images). The factory must accept ``num_classes`` and keyword
    overrides of its config. Registering a name twice or a bad ``input`` raises
    ``ValueError``.
    """
    if input not in INPUT_KINDS:
        raise ValueError(f"input must be one of {', '.join(INPUT_KINDS)}; got {input!r}")
    size = (default_cfg or {}).get("input_size")
    if size is not None and len(size) != (2 if input == "points" else 3):
        raise ValueError(
            f"input_size {tuple(size)} does not fit input={input!r}: "
            "points take (C, N), images (C, H, W)"
        )

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelCard(
            name=key,
            family=family,
            input=input,
            paper=paper,
            factory=factory,
            config=MappingProxyType(dict(config or {})),
            default_cfg=MappingProxyType(dict(default_cfg or {})),
            reported=tuple(reported),
            description=doc[0] if doc else "",
        )
        return factory

    return decorate(fn) if fn is not None else decorate


def _lookup(name: str) -> ModelCard:
    if not isinstance(name, str):
        raise UnknownModelError(f"model name must be a string, got {type(name).__name__}")
    card = _REGISTRY.get(name)
    if card is not None:
        return card
    names = sorted(_REGISTRY)
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)
    hint = [lowered[c] for c in close] or names
    label = "did you mean" if close else "available models"
    raise UnknownModelError(f"unknown model {name!r}; {label}: {', '.join(hint)}")


def is_model(name: str) -> bool:
    """Whether ``name`` is registered."""
    return name in _REGISTRY


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern``
    (``"coc_*"``, case-insensitive) and by ``family``."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
    if family is not None:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of ``name``; unknown names raise :class:`UnknownModelError`
    (a ``ValueError``) listing close matches."""
    return _lookup(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike | Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    strict: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (``0``: pooled features, no classifier); ``None``
            keeps the card's default. Anything else but an int >= 0 raises ``ValueError``.
        checkpoint: weights to load after building: a ``.safetensors`` / ``.pth`` path or a
            state dict, in any form :func:`~pointset.models.checkpoint.load_checkpoint`
            accepts (wrappers, ``module.`` prefixes, old 1x1-conv MLP weights).
        pretrained_cfg: entries that override the card's ``default_cfg`` (e.g. a ``file``
            to load when ``checkpoint`` is not given, or another ``input_size``). The merged
            mapping is attached to the model as ``model.pretrained_cfg``.
        strict: passed to ``load_checkpoint``.
        **overrides: constructor arguments that replace the published config
            (e.g. ``drop_path_rate=0.1``, ``in_channels=6``, ``features_only=True``).

    Returns:
        the model, in training mode, with ``model.pretrained_cfg`` and ``model.model_name``.

    Raises:
        UnknownModelError (ValueError): ``name`` is not registered (close matches listed).
        CheckpointError (ValueError): the checkpoint keys or shapes do not fit the model.
    """
    card = _lookup(name)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0
    ):
        raise ValueError(f"num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}")
    cfg = dict(card.default_cfg)
    if pretrained_cfg:
        cfg.update(pretrained_cfg)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    try:
        model = card.factory(**overrides)
    except TypeError as err:  # unknown override names
        raise ValueError(f"cannot build {name!r} with {sorted(overrides)}: {err}") from err
    if "num_classes" in overrides:
        cfg["num_classes"] = overrides["num_classes"]
    model.pretrained_cfg = cfg
    model.model_name = name
    source = checkpoint if checkpoint is not None else cfg.get("file")
    if source is not None:
        from pointset.models.checkpoint import load_checkpoint

        load_checkpoint(model, source, strict=strict)
    return model
