"""Training and evaluation: configs, the trainer, metrics, checkpoints, distributed runs.

Example::

    >>> from pointset.engine import Trainer, load_config
    >>> cfg = load_config("configs/demo/pointmlp_elite.yaml", ["train.epochs=2"])
    >>> Trainer(cfg).fit()  # doctest: +SKIP
"""

from .build import load_classifier
from .checkpoint import (
    CheckpointPaths,
    CheckpointWriteError,
    load_metadata,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from .config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)
from .guards import DivergenceError
from .loss import smoothed_cross_entropy
from .metrics import class_accuracies, confusion_matrix, mean_class_accuracy, overall_accuracy
from .schedule import WarmupCosineSchedule
from .trainer import RunExistsError, Trainer

__all__ = [
    "CheckpointPaths",
    "CheckpointWriteError",
    "Config",
    "ConfigError",
    "DataConfig",
    "DivergenceError",
    "ModelConfig",
    "RunExistsError",
    "TrainConfig",
    "Trainer",
    "WarmupCosineSchedule",
    "apply_overrides",
    "class_accuracies",
    "config_from_dict",
    "load_classifier",
    "confusion_matrix",
    "load_config",
    "load_metadata",
    "load_training_state",
    "load_weights",
    "mean_class_accuracy",
    "overall_accuracy",
    "save_checkpoint",
    "smoothed_cross_entropy",
]
