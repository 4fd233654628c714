"""Group normalisation with one group per point cloud (``GroupNorm(1, C)`` of packed clouds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pointset._checks import batch_counts, check_batch, check_positive_int

__all__ = ["CloudGroupNorm"]


class CloudGroupNorm(nn.Module):
    r"""``GroupNorm(1, C)`` of point clouds: each cloud is normalised over all its points and
    channels, then scaled and shifted per channel,

    .. math::
        y_i = \gamma \odot \frac{x_i - \mu_{b(i)}}{\sqrt{\sigma^2_{b(i)} + \epsilon}} + \beta,

    with :math:`\mu_b` and :math:`\sigma^2_b` the mean and biased variance of all entries of
    cloud :math:`b`. On the points of whole images this is ``nn.GroupNorm(1, C)`` of the
    feature map, which is what the Context Cluster models use (``norm1``, ``norm2``, the
    head's ``norm``); the parameters are named ``weight`` and ``bias`` like
    ``nn.GroupNorm``'s, so the official checkpoints load unchanged. (PyG's
    ``LayerNorm(mode="graph")`` differs for a single cloud, where it divides by the
    standard deviation plus :math:`\epsilon`.)

    Args:
        in_channels (int): channels ``C``.
        eps (float): added to the variance (default: ``1e-5``).
        affine (bool): learn :math:`\gamma` (``weight``, init 1) and :math:`\beta`
            (``bias``, init 0) (default: ``True``).

    Shapes:
        - **input:** ``x [N, C]``, ``pos`` (unused, may be ``None``), ``batch [N]``
          (optional), ``batch_size`` (optional: number of clouds)
        - **output:** ``[N, C]``
        - **dense input / output:** ``x [B, C, *]`` (``nn.GroupNorm(1, C)``)
    """

    def __init__(self, in_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.empty(in_channels))
            self.bias = nn.Parameter(torch.empty(in_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Normalise each cloud of ``x [N, C]`` (``pos`` is not used)."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [N, {self.in_channels}], got {shape}")
        if x.size(0) == 0:
            raise ValueError("x is empty (0 points)")
        batch = check_batch(batch, x.size(0))
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        num = batch_size if batch_size is not None else int(batch[-1]) + 1
        if int(batch[-1]) >= num:
            raise ValueError(f"batch has cloud {int(batch[-1])} but batch_size is {num}")
        count = batch_counts(batch, x.size(0), num).to(x.dtype) * x.size(1)
        if bool((count == 0).any()):
            raise ValueError(f"cloud {int((count == 0).nonzero()[0, 0])} of the batch is empty")
        mean = scatter(x.sum(1), batch, 0, num, reduce="sum") / count
        centred = x - mean[batch].unsqueeze(1)
        var = scatter(centred.square().sum(1), batch, 0, num, reduce="sum") / count
        y = centred * torch.rsqrt(var + self.eps)[batch].unsqueeze(1)
        if self.affine:
            y = y * self.weight + self.bias
        return y

    def forward_dense(self, x: Tensor) -> Tensor:
        """``nn.GroupNorm(1, C)`` of ``x [B, C, *]``."""
        if not isinstance(x, Tensor) or x.dim() < 2 or x.size(1) != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, {self.in_channels}, *], got {shape}")
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, eps={self.eps}, affine={self.affine}"
