"""``ClassificationTask.check``: the model card's input kind must match the dataset's.

Oracle: the registry cards (CoC takes images, PointMLP point clouds) and the split's kind."""

from __future__ import annotations

import pytest
import torch

from pointset.engine.config import config_from_dict
from pointset.engine.data import ArraySplit
from pointset.engine.tasks import ClassificationTask


def _task(model: str, tmp_path) -> ClassificationTask:
    raw = {"model": {"name": model}, "data": {"name": "synthetic_shapes", "root": str(tmp_path)}}
    return ClassificationTask(config_from_dict(raw))


def _points() -> ArraySplit:
    return ArraySplit(torch.zeros(2, 8, 3), torch.tensor([0, 1]), ["a", "b"], "points")


def test_point_model_on_point_data_passes(tmp_path):
    _task("pointmlp_elite", tmp_path).check("pointmlp_elite", _points())


def test_image_model_on_point_data_is_refused(tmp_path):
    message = "model 'coc_tiny' takes image input but dataset 'synthetic_shapes' gives points"
    with pytest.raises(ValueError, match=message):
        _task("coc_tiny", tmp_path).check("coc_tiny", _points())
