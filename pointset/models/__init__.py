"""Published models rebuilt from :mod:`pointset.nn`, behind one registry.

``create_model(name, num_classes=..., checkpoint=...)`` builds any of them;
``list_models()`` lists the names and ``model_card(name)`` gives the config and the
paper's reported numbers. ``load_checkpoint`` (in :mod:`pointset.models.checkpoint`) reads
official checkpoints safely; ``rgbd_input`` prepares RGBD point sets for the
``rgbd_pointmlp_coc`` classifier.
"""

from . import aff, coc, pointmlp, pointmlp_seg, rgbd  # noqa: F401  (importing registers the models)
from .aff import AutoFocusFormer
from .checkpoint import CheckpointError, load_checkpoint
from .coc import ContextClusterNet
from .pointmlp import PointMLP
from .pointmlp_seg import PointMLPPartSeg, PointMLPSeg, PointMLPSegBackbone, SegFeatures
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
from .rgbd import rgbd_input

__all__ = [
    "AutoFocusFormer",
    "CheckpointError",
    "ContextClusterNet",
    "ModelCard",
    "PointMLP",
    "PointMLPPartSeg",
    "PointMLPSeg",
    "PointMLPSegBackbone",
    "Reported",
    "SegFeatures",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "load_checkpoint",
    "model_card",
    "register_model",
    "rgbd_input",
]
