"""Build the configured model through the registry, and rebuild it from a checkpoint."""

from __future__ import annotations

from typing import Any

from torch import nn


def create(name: str, num_classes: int, checkpoint: str | None = None, **options: Any) -> nn.Module:
    """``pointset.models.create_model(name, num_classes=..., checkpoint=..., **options)``."""
    from pointset.models import create_model

    return create_model(name, num_classes=num_classes, checkpoint=checkpoint, **options)


def load_state(model: nn.Module, weights: dict[str, Any], checkpoint: str, name: str) -> None:
    """``model.load_state_dict(weights, strict=True)``; weights of another architecture raise
    a one-line ``ValueError`` naming ``checkpoint`` and the model ``name``."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [s.strip() for s in str(exc).strip().splitlines() if s.strip()]
        detail = " ".join(lines[:2])
        if len(detail) > 300:
            detail = detail[:300] + " ..."
        raise ValueError(f"checkpoint {checkpoint} does not fit model {name!r}: {detail}") from None


def load_classifier(checkpoint: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a trainer checkpoint was saved from, with its weights, in eval mode.

    Args:
        checkpoint: a trainer checkpoint (``runs/x/best``, or its ``.safetensors`` /
            ``.json`` file): the JSON metadata names the model, its options and classes.
        device: where to put the model.

    Returns:
        the model and the checkpoint metadata (``class_names``, ``input``, ``config``, ...).
    """
    from .checkpoint import load_metadata, load_weights

    meta = load_metadata(checkpoint)
    for key in ("model", "num_classes"):
        if key not in meta:
            raise ValueError(f"checkpoint metadata of {checkpoint} has no {key!r} entry")
    model = create(meta["model"], meta["num_classes"], **meta.get("model_options", {}))
    load_state(model, load_weights(checkpoint), checkpoint, meta["model"])
    return model.to(device).eval(), meta
