"""Published models rebuilt from :mod:`pointset.nn`, behind one registry.

``create_model(name, num_classes=..., checkpoint=...)`` builds any of them;
``list_models()`` lists the names and ``model_card(name)`` gives the config and the
paper's reported numbers.
"""

from . import aff, coc, pointmlp  # noqa: F401  (importing registers the models)
from .aff import AutoFocusFormer
from .coc import ContextClusterNet
from .pointmlp import PointMLP
from .registry import (
    ModelCard,
    Reported,
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_card,
    register_model,
)

__all__ = [
    "AutoFocusFormer",
    "ContextClusterNet",
    "ModelCard",
    "PointMLP",
    "Reported",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "model_card",
    "register_model",
]
