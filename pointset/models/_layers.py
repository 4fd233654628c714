"""Small building blocks shared by the image backbones: stochastic depth and the MLP."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DropPath", "Mlp"]


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of a sample with
    probability ``p`` and scale the kept ones by ``1 / (1 - p)``; identity in eval mode.

    Shapes:
        - **input / output:** ``[B, *]`` (one draw per leading index)
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.size(0),) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``Linear -> act -> Dropout -> Linear -> Dropout`` on channels-last features.

    Submodules are named ``fc1``, ``act``, ``fc2``, ``drop`` (the official key names).

    Args:
        in_features (int): input and output channels.
        hidden_features (int): hidden channels.
        act_layer (type): activation class (default: ``nn.GELU``, the erf form).
        drop (float): dropout after the activation and after ``fc2`` (default: 0).

    Shapes:
        - **input / output:** ``[..., in_features]``
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        act_layer: type = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
