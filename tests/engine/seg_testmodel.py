"""A tiny per-point segmentation model for the engine tests (registered on import).

PointNet-style: a shared per-point MLP, a max-pooled global feature concatenated back to
every point, and a per-point classifier. It follows the segmentation protocol
(``task: segmentation``, ``call: points``, logits ``[B, N, K]``); ``with_loss=True`` adds
a ``loss`` method (cross-entropy plus a small logit penalty) to exercise that path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset.models.registry import is_model, register_model

NAME = "test_point_seg"


class TinyPointSeg(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 6, width: int = 16):
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv1d(in_channels, width, 1), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Conv1d(2 * width, width, 1), nn.ReLU(), nn.Conv1d(width, num_classes, 1)
        )

    def forward(self, points: Tensor) -> Tensor:
        f = self.local(points)  # [B, W, N]
        g = f.amax(-1, keepdim=True).expand_as(f)
        return self.head(torch.cat([f, g], 1)).transpose(1, 2)  # [B, N, K]


class TinyPointSegWithLoss(TinyPointSeg):
    """The same network with its own ``loss``: cross-entropy plus a small logit penalty."""

    def loss(self, output: Tensor, labels: Tensor):
        ce = F.cross_entropy(
            output.reshape(-1, output.size(-1)), labels.reshape(-1), ignore_index=-1
        )
        reg = 1e-3 * output.pow(2).mean()
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach())}


if not is_model(NAME):

    @register_model(
        name=NAME,
        input="points",
        family="test",
        default_cfg={"task": "segmentation", "call": "points", "input_size": (6, 256)},
    )
    def test_point_seg(num_classes: int = 8, with_loss: bool = False, **kwargs) -> nn.Module:
        """Tiny PointNet-style per-point segmenter (tests only)."""
        return (TinyPointSegWithLoss if with_loss else TinyPointSeg)(num_classes, **kwargs)
