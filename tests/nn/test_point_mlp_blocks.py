"""Tests for pointset/nn/point_mlp_blocks.py."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pointset.nn.group_context_cluster import GroupContextCluster
from pointset.nn.local_grouper import LocalGrouper
from pointset.nn.point_mlp_blocks import (
    ConvBNReLU1D,
    ConvBNReLURes1D,
    PosExtraction,
    PreExtraction,
    activation_layer,
)


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN running statistics so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5, generator=gen)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return module.eval()


def _bn(y, bn):
    """Eval-mode BatchNorm1d on [B, C, L] written out."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (y - bn.running_mean[:, None]) * scale[:, None] + bn.bias[:, None]


def _conv(x, conv):
    """Kernel-1 Conv1d on [B, C, L] written as a matmul."""
    y = torch.einsum("oc,bcl->bol", conv.weight[:, :, 0], x)
    return y if conv.bias is None else y + conv.bias[:, None]


def test_conv_bn_relu_matches_formula():
    """Oracle: relu(BN(W x + b)) written with einsum and explicit BN arithmetic."""
    block = _randomize(ConvBNReLU1D(5, 7, bias=True).double())
    x = torch.randn(3, 5, 11, dtype=torch.float64)
    expected = torch.relu(_bn(_conv(x, block.net[0]), block.net[1]))
    torch.testing.assert_close(block.forward_dense(x), expected)


@pytest.mark.parametrize("res_expansion", [1.0, 0.25])
def test_residual_block_matches_formula(res_expansion):
    """Oracle: relu(BN2(W2 relu(BN1(W1 x))) + x) written out."""
    block = _randomize(ConvBNReLURes1D(8, res_expansion=res_expansion, bias=False).double())
    x = torch.randn(3, 8, 6, dtype=torch.float64)
    hidden = torch.relu(_bn(_conv(x, block.net1[0]), block.net1[1]))
    expected = torch.relu(_bn(_conv(hidden, block.net2[0]), block.net2[1]) + x)
    torch.testing.assert_close(block.forward_dense(x), expected)
    assert block.net1[0].out_channels == int(8 * res_expansion)


def test_grouped_residual_block_has_official_extra_layers():
    """Oracle: official layout for groups > 1 (net2 = gconv, BN, act, conv, BN)."""
    block = ConvBNReLURes1D(8, groups=2, bias=False)
    keys = [k for k in block.state_dict() if not k.endswith("num_batches_tracked")]
    assert [k for k in keys if k.startswith("net2")] == [
        "net2.0.weight",
        "net2.1.weight",
        "net2.1.bias",
        "net2.1.running_mean",
        "net2.1.running_var",
        "net2.3.weight",
        "net2.4.weight",
        "net2.4.bias",
        "net2.4.running_mean",
        "net2.4.running_var",
    ]
    assert block.net2[0].weight.shape == (8, 4, 1)
    assert block.forward_dense(torch.randn(2, 8, 5)).shape == (2, 8, 5)


def test_pre_extraction_is_max_over_group_of_pointwise_mlp():
    """Oracle: transfer + residual blocks applied to each group separately, then max over k."""
    pre = _randomize(PreExtraction(4, 16, blocks=2, use_xyz=True, bias=False).double())
    x = torch.randn(2, 5, 6, 2 * 4 + 3, dtype=torch.float64)  # [B, S, k, 2C+3]
    out = pre.forward_dense(x)
    assert out.shape == (2, 16, 5)
    for b in range(2):
        for s in range(5):
            members = x[b, s].t().unsqueeze(0)  # [1, 2C+3, k]
            feats = pre.transfer.forward_dense(members)
            for block in pre.operation:
                feats = block.forward_dense(feats)
            feats = feats[0]  # [16, k]
            torch.testing.assert_close(out[b, :, s], feats.max(dim=-1).values)


def test_pre_extraction_coc_interleaves_context_clusters():
    """Oracle: PointMLP-CoC layout, [ContextCluster, residual block] per block."""
    pre = PreExtraction(64, 128, blocks=2, use_xyz=False, coc=True)
    kinds = [type(m) for m in pre.operation]
    assert kinds == [GroupContextCluster, ConvBNReLURes1D] * 2
    assert pre.transfer.net[0].weight.shape == (128, 128, 1)
    assert pre.operation[0].fc1.weight.shape == (32, 128)


def test_pos_extraction_stacks_residual_blocks():
    """Oracle: the blocks applied one after another."""
    pos = _randomize(PosExtraction(6, blocks=3, res_expansion=0.5).double())
    x = torch.randn(2, 6, 9, dtype=torch.float64)
    expected = x
    for block in pos.operation:
        expected = block.forward_dense(expected)
    torch.testing.assert_close(pos.forward_dense(x), expected)
    assert len(pos.operation) == 3


def test_official_parameter_names():
    """Oracle: names from the official state-dict listing (net1.0.weight, transfer.net...)."""
    pre = PreExtraction(64, 128, blocks=1, use_xyz=False, bias=False)
    names = [k for k in pre.state_dict() if not k.endswith("num_batches_tracked")]
    assert names == [
        "transfer.net.0.weight",
        "transfer.net.1.weight",
        "transfer.net.1.bias",
        "transfer.net.1.running_mean",
        "transfer.net.1.running_var",
        "operation.0.net1.0.weight",
        "operation.0.net1.1.weight",
        "operation.0.net1.1.bias",
        "operation.0.net1.1.running_mean",
        "operation.0.net1.1.running_var",
        "operation.0.net2.0.weight",
        "operation.0.net2.1.weight",
        "operation.0.net2.1.bias",
        "operation.0.net2.1.running_mean",
        "operation.0.net2.1.running_var",
    ]


def test_reset_parameters_restores_defaults():
    """Oracle: PyTorch's default BN init (weight 1, bias 0) after reset."""
    block = _randomize(ConvBNReLURes1D(4))
    block.reset_parameters()
    assert torch.equal(block.net1[1].weight, torch.ones(4))
    assert torch.equal(block.net2[1].bias, torch.zeros(4))


def test_bad_input_raises_value_error():
    """Oracle: the input contract (ValueError naming the problem)."""
    with pytest.raises(ValueError, match="activation"):
        activation_layer("swishy")
    with pytest.raises(ValueError, match="hidden"):
        ConvBNReLURes1D(2, res_expansion=0.25)
    pre = PreExtraction(4, 8, use_xyz=False)
    with pytest.raises(ValueError, match=r"\[B, S, k, 8\]"):
        pre.forward_dense(torch.randn(2, 3, 4, 11))


def _official_pre_extraction(pre: PreExtraction, x: torch.Tensor) -> torch.Tensor:
    """The official channel-first computation: Conv1d / BatchNorm1d on [B*S, C, k], then
    ``adaptive_max_pool1d`` over the k members."""
    b, s, k, d = x.shape
    y = pre.transfer.net(x.permute(0, 1, 3, 2).reshape(b * s, d, k))
    for layer in pre.operation:
        if isinstance(layer, GroupContextCluster):
            y = layer.forward_dense(y)
        else:
            y = layer.act(layer.net2(layer.net1(y)) + y)
    return torch.nn.functional.adaptive_max_pool1d(y, 1).reshape(b, s, -1).permute(0, 2, 1)


@pytest.mark.parametrize("groups,coc", [(1, False), (2, False), (1, True)])
def test_channels_last_rows_equal_conv1d_in_training(groups, coc):
    """Oracle: the official Conv1d / BatchNorm1d path on [B*S, C, k] in train mode (batch
    statistics): same output, same input and parameter gradients, same running stats."""
    ours = _randomize(
        PreExtraction(3, 8, blocks=2, groups=groups, res_expansion=0.5, coc=coc).double()
    ).train()
    ref = _randomize(
        PreExtraction(3, 8, blocks=2, groups=groups, res_expansion=0.5, coc=coc).double()
    ).train()
    x = torch.randn(2, 5, 6, 2 * 3 + 3, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours.forward_dense(x_ours), _official_pre_extraction(ref, x_ref)
    torch.testing.assert_close(out_ours, out_ref)
    weight = torch.randn_like(out_ref)
    (out_ours * weight).sum().backward()
    (out_ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    for (name, p_ours), p_ref in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, msg=name)
    for (name, b_ours), b_ref in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b_ours, b_ref, msg=name)


def test_pos_extraction_rows_equal_conv1d_on_transposed_input():
    """Oracle: the blocks' Conv1d modules applied channel-first, on a non-contiguous
    (transposed channels-last) input as the model passes it."""
    pos = _randomize(PosExtraction(6, blocks=2).double()).train()
    x = torch.randn(2, 9, 6, dtype=torch.float64).transpose(1, 2)  # [B, C, S] view
    expected = x
    for block in pos.operation:
        expected = block.act(block.net2(block.net1(expected)) + expected)
    torch.testing.assert_close(pos.forward_dense(x), expected)


def test_packed_forward_equals_the_dense_layout():
    """Oracle: ``forward_dense`` on the same points laid out channel first: packed rows
    ``[N, C]`` are one ``[1, C, N]`` sequence (BatchNorm statistics over the same N
    entries); packed groups ``[M, k, C]`` are ``[1, M, k, C]``."""
    torch.manual_seed(3)
    x = torch.randn(13, 6, dtype=torch.float64)
    dense = x.t().unsqueeze(0)  # [1, C, N]
    for layer in (
        ConvBNReLU1D(6, 4),
        ConvBNReLURes1D(6, groups=2, res_expansion=2.0),
        PosExtraction(6, blocks=2),
    ):
        layer = _randomize(layer.double()).train()
        torch.testing.assert_close(layer(x, None, None), layer.forward_dense(dense)[0].t())
    pre = _randomize(PreExtraction(2, 8, blocks=1, use_xyz=True, coc=True).double()).train()
    groups = torch.randn(5, 4, 2 * 2 + 3, dtype=torch.float64)
    torch.testing.assert_close(pre(groups), pre.forward_dense(groups[None])[0].t())
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        ConvBNReLU1D(6, 4)(dense)
    with pytest.raises(ValueError, match="forward_dense"):
        ConvBNReLU1D(6, 4, kernel_size=3)(x)


@pytest.mark.parametrize("groups,coc", [(1, False), (2, False), (1, True)])
def test_folded_eval_rows_equal_conv1d_in_eval(groups, coc):
    """Oracle: the official Conv1d / BatchNorm1d path in eval mode (running statistics);
    the folded products give the same output and the same input and parameter gradients."""
    ours = _randomize(
        PreExtraction(3, 8, blocks=2, groups=groups, res_expansion=0.5, coc=coc).double()
    )
    ref = _randomize(
        PreExtraction(3, 8, blocks=2, groups=groups, res_expansion=0.5, coc=coc).double()
    )
    x = torch.randn(2, 5, 6, 2 * 3 + 3, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours.forward_dense(x_ours), _official_pre_extraction(ref, x_ref)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_dense(x), out_ref, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(out_ref)
    (out_ours * weight).sum().backward()
    (out_ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for (name, p_ours), p_ref in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-10, atol=1e-10, msg=name)
    for (name, b_ours), b_ref in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b_ours, b_ref, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("normalize,use_xyz", [("anchor", False), ("center", True), (None, True)])
def test_forward_grouped_equals_grouper_then_official_pre_extraction(normalize, use_xyz, train):
    """Oracle: the LocalGrouper's groups fed to the official Conv1d / BatchNorm1d path;
    forward_grouped (transfer product on points and anchors) gives the same anchors,
    output, input / grouper / block gradients and running statistics (float64)."""
    torch.manual_seed(0)
    grouper = LocalGrouper(4, 6, 5, use_xyz=use_xyz, normalize=normalize).double()
    if grouper.affine_alpha is not None:
        with torch.no_grad():
            grouper.affine_alpha.uniform_(0.5, 1.5)
            grouper.affine_beta.uniform_(-0.5, 0.5)
    modules = {}
    for side in ("ours", "ref"):
        pre = _randomize(PreExtraction(4, 8, blocks=2, use_xyz=use_xyz, coc=True).double())
        modules[side] = (copy.deepcopy(grouper).train(train), pre.train(train))
    xyz = torch.rand(2, 20, 3, dtype=torch.float64)
    points = torch.randn(2, 20, 4, dtype=torch.float64)
    p_ours, p_ref = points.clone().requires_grad_(), points.clone().requires_grad_()
    anchors, out_ours = modules["ours"][1].forward_grouped(modules["ours"][0], xyz, p_ours)
    exp_anchors, groups = modules["ref"][0].forward_dense(xyz, p_ref)
    out_ref = _official_pre_extraction(modules["ref"][1], groups)
    torch.testing.assert_close(anchors, exp_anchors, rtol=0, atol=0)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(out_ref)
    (out_ours * weight).sum().backward()
    (out_ref * weight).sum().backward()
    torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-10, atol=1e-10)
    for part in range(2):
        named_ref = dict(modules["ref"][part].named_parameters())
        for name, p in modules["ours"][part].named_parameters():
            torch.testing.assert_close(p.grad, named_ref[name].grad, rtol=1e-9, atol=1e-10)
        named_ref = dict(modules["ref"][part].named_buffers())
        for name, b in modules["ours"][part].named_buffers():
            torch.testing.assert_close(b, named_ref[name], rtol=1e-12, atol=1e-12, msg=name)


def test_forward_grouped_rejects_a_mismatched_grouper():
    """Oracle: the input contract (ValueError naming both channel counts)."""
    pre = PreExtraction(4, 8, use_xyz=False)
    with pytest.raises(ValueError, match="gives 11 channels"):
        pre.forward_grouped(
            LocalGrouper(4, 3, 2, use_xyz=True), torch.rand(1, 8, 3), torch.rand(1, 8, 4)
        )
