"""Building blocks of the kMaX layers: the ConvBN unit with the official key names, and
stochastic depth.

The official kMaX code wraps every projection in a ``ConvBN`` (``conv`` -> ``norm`` -> ``act``)
whose state_dict keys are ``conv.weight`` (+ ``conv.bias``) and ``norm.*``. Here one class
keeps those keys and applies the same weights either channels-first (``[B, C, L]``, the
official layout) or channels-last on packed points (``[N, C]``), so the dense and packed paths
of a layer share their parameters and their arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BN_EPS", "BN_MOMENTUM", "ConvBN", "drop_path", "kmax_norm"]

#: The official ``get_norm('syncbn')``: ``SyncBatchNorm(eps=1e-3, momentum=0.01)``.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def kmax_norm(channels: int) -> nn.BatchNorm1d:
    """The official BatchNorm (eps 1e-3, momentum 0.01), taking ``[N, C]`` or ``[B, C, L]``."""
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def trunc_normal_tf(weight: Tensor, std: float) -> None:
    """TF's truncated normal: N(0, std) cut at +-2 std (timm's ``trunc_normal_tf_``)."""
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class ConvBN(nn.Module):
    """A 1x1 projection (``Conv1d``/``Conv2d`` weight) -> optional BatchNorm -> optional GELU.

    Args:
        in_channels (int), out_channels (int): widths.
        bias (bool): conv bias (default: False).
        norm (bool): BatchNorm after the conv (default: True).
        act (bool): exact GELU at the end (default: False).
        conv2d (bool): store the weight as ``[out, in, 1, 1]`` (a ``Conv2d``) instead of
            ``[out, in, 1]``, to match an official key's shape.
        init (str | float): ``"he"`` (truncated normal, std ``sqrt(2 / in)``, the official
            default) or a float std for a truncated normal.
        norm_init (float): initial BatchNorm weight (0 for the residual branches).

    Shapes:
        - **input:** ``[B, in, L]`` (channels first) or ``[N, in]`` (packed points)
        - **output:** ``[B, out, L]`` or ``[N, out]``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
        conv2d: bool = False,
        init: str | float = "he",
        norm_init: float = 1.0,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if conv2d else nn.Conv1d
        self.conv = conv(in_channels, out_channels, kernel_size=1, bias=bias)
        self.norm = kmax_norm(out_channels) if norm else None
        self.act = act
        self.init = init
        self.norm_init = norm_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / self.conv.in_channels) if self.init == "he" else float(self.init)
        trunc_normal_tf(self.conv.weight, std)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.norm is not None:
            self.norm.reset_parameters()
            nn.init.constant_(self.norm.weight, self.norm_init)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.conv.weight.flatten(1)
        if x.dim() == 2:
            y = F.linear(x, weight, self.conv.bias)
        else:
            y = F.conv1d(x, weight.unsqueeze(-1), self.conv.bias)
        if self.norm is not None:
            y = self.norm(y)
        return F.gelu(y) if self.act else y


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample (timm's ``DropPath``): ``x [B, ...]``, one draw per ``b``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.size(0),) + (1,) * (x.dim() - 1)
    return x * torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
