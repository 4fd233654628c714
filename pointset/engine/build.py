"""Build the configured model through the registry and tell which input layout it takes."""

from __future__ import annotations

from typing import Any

from torch import nn


def create(name: str, num_classes: int, checkpoint: str | None = None, **options: Any) -> nn.Module:
    """``pointset.models.create_model(name, num_classes=..., checkpoint=..., **options)``."""
    from pointset.models import create_model

    return create_model(name, num_classes=num_classes, checkpoint=checkpoint, **options)


def input_kind(name: str) -> str:
    """``"points"`` for models fed ``[B, C, N]`` point clouds, ``"image"`` for ``[B, C, H, W]``."""
    from pointset.models import model_card

    size = model_card(name).input_size
    if size is not None:
        return "image" if len(size) == 3 else "points"
    return "image" if name.startswith(("coc", "aff")) else "points"
