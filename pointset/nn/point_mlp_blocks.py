"""PointMLP's residual point MLP blocks (kernel-1 ``Conv1d`` + ``BatchNorm1d`` + activation).

``forward`` takes packed points ``[N, C]`` (channels last), ``forward_dense`` the official
channel-first tensors ``[B, C, L]`` (``L`` points or group members); the blocks
keep the official submodule names, so official checkpoints load with ``strict=True``.

A kernel-1 ``Conv1d`` is a matrix product applied to every point, and ``BatchNorm1d`` on
``[B, C, L]`` normalises over ``B * L`` exactly as on the rows of ``[B * L, C]``. So the
blocks compute on channels-last rows ``[M, C]`` in both layouts: one ``F.linear``
with ``weight.squeeze(-1)`` per convolution and a 2-D batch norm, which on CPU is several
times faster than ``Conv1d`` on ``[B * S, C, k]`` (many tiny convolutions). The
parameters and buffers stay those of the ``Conv1d`` / ``BatchNorm1d`` modules.

A batch norm that normalises with its running statistics (eval mode) is an affine map per
channel, so it is folded into the convolution before it: one ``addmm`` with the weight
``W * s`` and bias ``(b - mu) * s + beta``, ``s = gamma / sqrt(var + eps)``, computed from the
parameters at every call (exact up to floating-point rounding, and differentiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointset._checks import check_int, check_positive_int

from ._row_product import linear_rows
from .group_context_cluster import GroupContextCluster
from .local_grouper import LocalGrouper

ACTIVATIONS = ("relu", "gelu", "rrelu", "selu", "silu", "hardswish", "leakyrelu", "leakyrelu0.2")


def activation_layer(name: str) -> nn.Module:
    """The activation module PointMLP names ``name`` (case-insensitive).

    Unlike the official helper, which silently falls back to ReLU, an unknown name raises
    ``ValueError``.
    """
    key = str(name).lower()
    if key == "relu":
        return nn.ReLU(inplace=True)
    if key == "gelu":
        return nn.GELU()
    if key == "rrelu":
        return nn.RReLU(inplace=True)
    if key == "selu":
        return nn.SELU(inplace=True)
    if key == "silu":
        return nn.SiLU(inplace=True)
    if key == "hardswish":
        return nn.Hardswish(inplace=True)
    if key == "leakyrelu":
        return nn.LeakyReLU(inplace=True)
    if key == "leakyrelu0.2":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"unknown activation {name!r}; valid activations are {', '.join(ACTIVATIONS)}")


def _reset_children(module: nn.Module) -> None:
    """Re-initialise every submodule once (containers are walked into)."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            _reset_children(child)


def check_channel_first(x: Tensor, channels: int, name: str) -> None:
    """``x`` must be a non-empty ``[B, channels, L]`` tensor (raise ``ValueError``)."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.size(1) != channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects [B, {channels}, L] (channels first), got {shape}")
    if x.size(0) == 0 or x.size(2) == 0:
        raise ValueError(f"{name} got an empty input of shape {tuple(x.shape)}")


def check_rows(x: Tensor, channels: int, name: str) -> None:
    """``x`` must be a non-empty ``[N, channels]`` tensor of packed points (raise ``ValueError``)."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects packed points [N, {channels}], got {shape}")
    if x.size(0) == 0:
        raise ValueError(f"{name} got an empty input of shape {tuple(x.shape)}")


def _check_pointwise(module: nn.Module, *seqs: nn.Sequential) -> None:
    """Packed points have no order along a sequence: only kernel size 1 applies to them."""
    if not all(_pointwise(seq) for seq in seqs):
        raise ValueError(
            f"{type(module).__name__} with kernel_size > 1 needs the dense layout; "
            "use forward_dense on [B, C, L]"
        )


def conv_rows(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """A kernel-1 ``conv`` applied to channels-last rows ``x [M, C_in]`` -> ``[M, C_out]``."""
    return _linear_rows(x, conv.weight.squeeze(-1), conv.bias, conv.groups)


def _linear_rows(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1) -> Tensor:
    """Rows ``x [M, C_in]`` times a (grouped) ``weight [C_out, C_in / groups]`` plus ``bias``."""
    if groups == 1:
        return linear_rows(x, weight, bias)
    y = torch.einsum(
        "mgi,goi->mgo", x.view(x.size(0), groups, -1), weight.view(groups, -1, weight.size(1))
    ).reshape(x.size(0), -1)
    return y if bias is None else y + bias


def _uses_running_stats(bn: nn.Module) -> bool:
    """Whether ``bn`` is a batch norm that normalises with its running statistics."""
    return (
        isinstance(bn, nn.BatchNorm1d)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def folded_conv_bn(conv: nn.Conv1d, bn: nn.Module) -> tuple[Tensor, Tensor | None, bool]:
    """The kernel-1 ``conv`` followed by ``bn`` as one affine map where that is exact.

    Returns:
        ``weight [C_out, C_in / groups]``, ``bias [C_out]`` (or ``None``) and whether ``bn``
        was folded in (only when it uses running statistics; otherwise the convolution's own
        weight and bias are returned and ``bn`` must still be applied).
    """
    weight = conv.weight.squeeze(-1)
    if not _uses_running_stats(bn):
        return weight, conv.bias, False
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = shift * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    return weight * scale.unsqueeze(1), bias, True


def sequential_rows(seq: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``Conv1d`` / ``BatchNorm1d`` / activation layers on rows ``x [M, C]``; a
    ``Conv1d`` followed by an eval-mode ``BatchNorm1d`` runs as one folded ``addmm``."""
    layers = list(seq)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Conv1d):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            weight, bias, folded = folded_conv_bn(layer, nxt)
            x = _linear_rows(x, weight, bias, layer.groups)
            i += 2 if folded else 1
        else:
            x = layer(x)
            i += 1
    return x


def _pointwise(seq: nn.Sequential) -> bool:
    """Whether every convolution of ``seq`` has kernel size 1 (rows apply)."""
    return all(m.kernel_size == (1,) for m in seq if isinstance(m, nn.Conv1d))


def _to_rows(x: Tensor) -> Tensor:
    """``[B, C, L]`` -> ``[B * L, C]`` (a view when ``x`` is a transposed channels-last
    tensor)."""
    return x.transpose(1, 2).reshape(-1, x.size(1))


def _from_rows(rows: Tensor, b: int) -> Tensor:
    """``[B * L, C]`` -> ``[B, C, L]`` (a transposed view of the rows)."""
    return rows.view(b, -1, rows.size(-1)).transpose(1, 2)


class ConvBNReLU1D(nn.Module):
    r"""Pointwise ``Conv1d -> BatchNorm1d -> activation`` (``net.0``, ``net.1``, ``net.2``).

    .. math::
        y = \mathrm{act}(\mathrm{BN}(W x + b))

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int, optional): Convolution width. (default: ``1``)
        bias (bool, optional): Convolution bias. (default: ``True``)
        activation (str, optional): See :func:`activation_layer`. (default: ``"relu"``)

    Shapes:
        - **input:** :math:`(N, C_{in})` packed points (``pos`` and ``batch`` unused;
          kernel size 1; batch statistics over the ``N`` rows)
        - **output:** :math:`(N, C_{out})`
        - **dense input:** :math:`(B, C_{in}, L)`
        - **dense output:** :math:`(B, C_{out}, L - \text{kernel\_size} + 1)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        bias: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
        ):
            check_positive_int(value, name)
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, bias=bias),
            nn.BatchNorm1d(out_channels),
            activation_layer(activation),
        )

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, pos: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Packed points ``x [N, C_in]`` -> ``[N, C_out]`` (kernel size 1 only; batch
        statistics over the ``N`` rows; ``pos`` and ``batch`` are not used)."""
        check_rows(x, self.net[0].in_channels, type(self).__name__)
        _check_pointwise(self, self.net)
        return sequential_rows(self.net, x)

    def forward_dense(self, x: Tensor) -> Tensor:
        """The official layout ``x [B, C_in, L]`` -> ``[B, C_out, L']``."""
        check_channel_first(x, self.net[0].in_channels, type(self).__name__)
        if not _pointwise(self.net):
            return self.net(x)
        return _from_rows(sequential_rows(self.net, _to_rows(x)), x.size(0))


class ConvBNReLURes1D(nn.Module):
    r"""PointMLP's residual point block.

    .. math::
        y = \mathrm{act}\big(\mathrm{BN}_2(W_2\, \mathrm{act}(\mathrm{BN}_1(W_1 x))) + x\big)

    ``W_1`` maps ``in_channels`` to ``int(in_channels * res_expansion)`` and ``W_2`` maps back. With
    ``groups > 1`` both convolutions are grouped and ``net2`` gains a second, dense
    ``Conv1d + BatchNorm1d`` after an activation (as in the official code).

    Args:
        in_channels (int): Channels in and out.
        kernel_size (int, optional): Convolution width (``1`` keeps ``L``). (default: ``1``)
        groups (int, optional): Convolution groups. (default: ``1``)
        res_expansion (float, optional): Hidden width factor. (default: ``1.0``)
        bias (bool, optional): Convolution biases. (default: ``True``)
        activation (str, optional): See :func:`activation_layer`. (default: ``"relu"``)

    Shapes:
        - **input:** :math:`(N, C)` packed points (``pos`` and ``batch`` unused; kernel
          size 1) -> **output:** :math:`(N, C)`
        - **dense input:** :math:`(B, C, L)` -> **dense output:** :math:`(B, C, L)`
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int = 1,
        groups: int = 1,
        res_expansion: float = 1.0,
        bias: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("kernel_size", kernel_size),
            ("groups", groups),
        ):
            check_positive_int(value, name)
        hidden = int(in_channels * res_expansion)
        if hidden < 1:
            raise ValueError(
                f"res_expansion={res_expansion} leaves no hidden channels for in_channels={in_channels}"
            )
        self.act = activation_layer(activation)
        self.net1 = nn.Sequential(
            nn.Conv1d(in_channels, hidden, kernel_size, groups=groups, bias=bias),
            nn.BatchNorm1d(hidden),
            activation_layer(activation),
        )
        if groups > 1:
            self.net2 = nn.Sequential(
                nn.Conv1d(hidden, in_channels, kernel_size, groups=groups, bias=bias),
                nn.BatchNorm1d(in_channels),
                activation_layer(activation),
                nn.Conv1d(in_channels, in_channels, kernel_size, bias=bias),
                nn.BatchNorm1d(in_channels),
            )
        else:
            self.net2 = nn.Sequential(
                nn.Conv1d(hidden, in_channels, kernel_size, bias=bias),
                nn.BatchNorm1d(in_channels),
            )

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, pos: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Packed points ``x [N, C]`` -> ``[N, C]`` (kernel size 1 only; ``pos`` and
        ``batch`` are not used)."""
        check_rows(x, self.net1[0].in_channels, type(self).__name__)
        _check_pointwise(self, self.net1, self.net2)
        return self._rows(x)

    def _rows(self, x: Tensor) -> Tensor:
        """Checked channels-last rows ``x [M, C]`` -> ``[M, C]``."""
        # the sum is a fresh tensor that no backward needs, so it is updated in place
        return self.act(sequential_rows(self.net2, sequential_rows(self.net1, x)).add_(x))

    def forward_dense(self, x: Tensor) -> Tensor:
        """The official layout ``x [B, C, L]`` -> ``[B, C, L]``."""
        check_channel_first(x, self.net1[0].in_channels, type(self).__name__)
        if not (_pointwise(self.net1) and _pointwise(self.net2)):
            return self.act(self.net2(self.net1(x)) + x)
        return _from_rows(self._rows(_to_rows(x)), x.size(0))


class PreExtraction(nn.Module):
    r"""PointMLP's per-group extractor :math:`\Phi_{pre}`: shared MLP, then max over the group.

    ``transfer`` (:class:`ConvBNReLU1D`) maps the grouped channels to ``out_channels``, then
    ``operation`` runs ``blocks`` :class:`ConvBNReLURes1D` over the members of every group
    (with ``coc=True`` each block is preceded by a :class:`GroupContextCluster`, as in
    PointMLP-CoC), and a max over the ``k`` members gives one vector per group.

    Args:
        in_channels (int): Point feature channels ``C`` before grouping.
        out_channels (int): Output channels.
        blocks (int, optional): Residual blocks. (default: ``1``)
        groups (int, optional): Convolution groups. (default: ``1``)
        res_expansion (float, optional): Hidden width factor. (default: ``1``)
        bias (bool, optional): Convolution biases. (default: ``True``)
        activation (str, optional): See :func:`activation_layer`. (default: ``"relu"``)
        use_xyz (bool, optional): Groups carry ``pos_dim`` extra position channels, as from
            :class:`~pointset.nn.LocalGrouper` with ``use_xyz=True``. (default: ``True``)
        coc (bool, optional): Insert a group-wise context cluster before every block.
            (default: ``False``)
        pos_dim (int, optional): Position channels added by ``use_xyz``. (default: ``3``)

    Shapes:
        - **input:** :math:`(M, k, 2C (+D))` packed groups (``PackedGroups.x`` of
          :class:`~pointset.nn.LocalGrouper`; ``pos`` and ``batch`` unused)
        - **output:** :math:`(M, C_{out})`
        - **dense input:** :math:`(B, S, k, 2C (+D))` grouped points
        - **dense output:** :math:`(B, C_{out}, S)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int = 1,
        groups: int = 1,
        res_expansion: float = 1,
        bias: bool = True,
        activation: str = "relu",
        use_xyz: bool = True,
        coc: bool = False,
        pos_dim: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            check_positive_int(value, name)
        check_int(blocks, "blocks", minimum=0)
        self.in_channels = in_channels
        #: channels of a grouped point: ``2 C (+ D)``
        self.group_channels = 2 * in_channels + (pos_dim if use_xyz else 0)
        self.transfer = ConvBNReLU1D(
            self.group_channels, out_channels, bias=bias, activation=activation
        )
        operation: list[nn.Module] = []
        for _ in range(blocks):
            if coc:
                operation.append(GroupContextCluster(out_channels))
            operation.append(
                ConvBNReLURes1D(
                    out_channels,
                    groups=groups,
                    res_expansion=res_expansion,
                    bias=bias,
                    activation=activation,
                )
            )
        self.operation = nn.Sequential(*operation)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, pos: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Packed groups ``x [M, k, C_in]`` -> one vector per group ``[M, C_out]``."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.size(-1) != self.group_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"PreExtraction expects packed groups [M, k, {self.group_channels}], got {shape}"
            )
        return self._groups(x.unsqueeze(0))[0]

    def forward_dense(self, x: Tensor) -> Tensor:
        """The official layout: grouped points ``x [B, S, k, C_in]`` -> ``[B, C_out, S]``."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.size(-1) != self.group_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"PreExtraction expects grouped points [B, S, k, {self.group_channels}], got {shape}"
            )
        return self._groups(x).transpose(1, 2)

    def _groups(self, x: Tensor) -> Tensor:
        """``[B, S, k, C_in]`` -> max over the members of every group ``[B, S, C_out]``."""
        b, s, k, d = x.shape
        if b == 0 or s == 0 or k == 0:
            raise ValueError(f"PreExtraction got an empty input of shape {tuple(x.shape)}")
        rows = sequential_rows(self.transfer.net, x.reshape(b * s * k, d))  # [B*S*k, C_out]
        return self._extract(rows, b, s, k)

    def forward_grouped(
        self, grouper: LocalGrouper, xyz: Tensor, points: Tensor
    ) -> tuple[Tensor, Tensor]:
        r"""Group dense clouds with ``grouper`` and extract: ``new_xyz, self(groups)`` for
        ``new_xyz, groups = grouper(xyz, points)``, without building ``groups``.

        ``transfer``'s convolution is linear in the group members, and a member of anchor
        :math:`a` is :math:`[\alpha \odot (f_j - r_a)\, s + \beta,\ f_a]`, so with
        :math:`W = [W_g, W_f]`

        .. math::
            W g_{a,j} + c = s\, P_j + Q_a, \quad P = (W_g \operatorname{diag}\alpha) f,
            \quad Q_a = W_f f_a + W_g \beta + c - s\, (W_g \operatorname{diag}\alpha) r_a:

        the product runs over the ``N`` points and ``S`` anchors, and only its output is
        gathered for the ``S * k`` members (PointMLP's widest matrix product, on ``2C``
        input channels, becomes a gather). Exact up to floating-point rounding; the batch
        statistics, running statistics and gradients are those of :meth:`forward`.

        Args:
            grouper (LocalGrouper): The grouper of this stage
                (``grouper.out_channels == in_channels``).
            xyz: ``[B, N, D]`` positions.
            points: ``[B, N, C]`` features.

        Returns:
            ``new_xyz [B, S, D]`` and ``[B, C_out, S]``.
        """
        if grouper.out_channels != self.group_channels:
            raise ValueError(
                f"the grouper gives {grouper.out_channels} channels, PreExtraction expects "
                f"{self.group_channels}"
            )
        grouper._check_dense_points(xyz, points)
        parts = grouper._dense_parts(xyz, points)
        conv, bn, act = self.transfer.net
        if not _pointwise(self.transfer.net):
            raise ValueError("forward_grouped needs a kernel-1 transfer convolution")
        weight, bias, folded = folded_conv_bn(conv, bn)  # [C_out, C' + C], [C_out]
        c_member = parts.feats.size(-1)
        w_member, w_anchor = weight[:, :c_member], weight[:, c_member:]
        per_anchor = F.linear(parts.anchor, w_anchor, bias)  # [B, S, C_out]
        if parts.scale is None:
            per_point = linear_rows(parts.feats, w_member)  # [B, N, C_out]
        else:
            w_scaled = w_member * grouper.affine_alpha.view(1, -1)
            scale = parts.scale.view(-1, 1, 1)
            per_point = linear_rows(parts.feats, w_scaled) * scale
            per_anchor = (
                per_anchor
                + F.linear(grouper.affine_beta.view(-1), w_member)
                - F.linear(parts.reference, w_scaled) * scale
            )
        b, n, c_out = per_point.shape
        s, k = parts.knn_idx.shape[1:]
        offsets = torch.arange(b, device=xyz.device).view(-1, 1, 1) * n
        index = (parts.knn_idx + offsets).reshape(-1)
        rows = per_point.reshape(b * n, c_out).index_select(0, index)  # [B*S*k, C_out]
        # the gathered rows are a fresh tensor that no backward needs: add in place
        rows.view(b * s, k, c_out).add_(per_anchor.reshape(b * s, 1, c_out))
        if not folded:
            rows = bn(rows)
        return parts.new_xyz, self._extract(act(rows), b, s, k).transpose(1, 2)

    def _extract(self, rows: Tensor, b: int, s: int, k: int) -> Tensor:
        """``operation`` on transferred rows ``[B*S*k, C_out]``, then the max over each
        group -> ``[B, S, C_out]``."""
        for layer in self.operation:
            if isinstance(layer, GroupContextCluster):
                rows = layer.forward_tokens(rows.view(b * s, k, -1)).view(b * s * k, -1)
            else:
                rows = layer._rows(rows)
        groups = rows.view(b, s, k, -1)
        if torch.is_grad_enabled() and rows.requires_grad:
            # max's gradient goes to one member per group, as Conv1d + max pooling's does
            pooled = groups.max(dim=2).values
        else:
            pooled = groups.amax(dim=2)
        return pooled


class PosExtraction(nn.Module):
    r"""PointMLP's per-anchor extractor :math:`\Phi_{pos}`: ``blocks`` residual blocks.

    Args:
        in_channels (int): Channels in and out.
        blocks (int, optional): Residual blocks. (default: ``1``)
        groups (int, optional): Convolution groups. (default: ``1``)
        res_expansion (float, optional): Hidden width factor. (default: ``1``)
        bias (bool, optional): Convolution biases. (default: ``True``)
        activation (str, optional): See :func:`activation_layer`. (default: ``"relu"``)

    Shapes:
        - **input:** :math:`(N, C)` packed points (``pos`` and ``batch`` unused) ->
          **output:** :math:`(N, C)`
        - **dense input:** :math:`(B, C, S)` -> **dense output:** :math:`(B, C, S)`
    """

    def __init__(
        self,
        in_channels: int,
        blocks: int = 1,
        groups: int = 1,
        res_expansion: float = 1,
        bias: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_int(blocks, "blocks", minimum=0)
        self.in_channels = in_channels
        self.operation = nn.Sequential(
            *(
                ConvBNReLURes1D(
                    in_channels,
                    groups=groups,
                    res_expansion=res_expansion,
                    bias=bias,
                    activation=activation,
                )
                for _ in range(blocks)
            )
        )

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, pos: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Packed points ``x [N, C]`` -> ``[N, C]`` (``pos`` and ``batch`` are not used)."""
        check_rows(x, self.in_channels, type(self).__name__)
        return self._rows(x)

    def forward_dense(self, x: Tensor) -> Tensor:
        """The official layout ``x [B, C, S]`` -> ``[B, C, S]``."""
        check_channel_first(x, self.in_channels, type(self).__name__)
        return _from_rows(self._rows(_to_rows(x)), x.size(0))

    def _rows(self, rows: Tensor) -> Tensor:
        for block in self.operation:
            rows = block._rows(rows)
        return rows
