"""Tests for pointset/nn/cloud_group_norm.py.

Oracles: ``torch.nn.GroupNorm(1, C)`` on the feature map of each cloud (whole images and
clouds of unequal size), and the state-dict keys of ``nn.GroupNorm``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pointset.nn import CloudGroupNorm


def _layers(channels: int) -> tuple[CloudGroupNorm, nn.GroupNorm]:
    norm = CloudGroupNorm(channels, eps=1e-4)
    ref = nn.GroupNorm(1, channels, eps=1e-4)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    norm.load_state_dict(ref.state_dict())  # same keys: weight, bias
    return norm, ref


def test_packed_clouds_equal_group_norm_of_each_cloud():
    """Oracle: nn.GroupNorm(1, C) on every cloud alone, as a [1, C, n] map."""
    torch.manual_seed(0)
    norm, ref = _layers(5)
    sizes = [7, 3, 12]
    x = torch.randn(sum(sizes), 5, dtype=torch.float64) * 3 + 1
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    out = norm.double()(x, None, batch)
    expected = torch.cat([ref.double()(part.t()[None])[0].t() for part in x.split(sizes)])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm(x[:7]), expected[:7])  # batch=None: one cloud
    torch.testing.assert_close(norm(x, None, batch, batch_size=3), out)


def test_dense_path_is_group_norm_and_equals_the_packed_points():
    """Oracle: nn.GroupNorm(1, C) on [B, C, H, W]; its rows are the packed path's output."""
    torch.manual_seed(1)
    norm, ref = _layers(4)
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(norm.forward_dense(x), ref(x))
    rows = x.permute(0, 2, 3, 1).reshape(-1, 4)
    batch = torch.arange(2).repeat_interleave(15)
    expected = ref(x).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(norm(rows, None, batch), expected, atol=1e-6, rtol=0)


def test_reset_parameters_and_bad_input():
    norm = CloudGroupNorm(3)
    with torch.no_grad():
        norm.weight.fill_(2.0)
    norm.reset_parameters()
    assert norm.weight.tolist() == [1.0] * 3 and norm.bias.tolist() == [0.0] * 3
    assert CloudGroupNorm(3, affine=False).state_dict() == {}
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        norm(torch.randn(4, 2))
    with pytest.raises(ValueError, match="empty"):
        norm(torch.randn(0, 3))
    with pytest.raises(ValueError, match="empty"):
        norm(torch.randn(4, 3), None, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="batch_size"):
        norm(torch.randn(4, 3), None, torch.tensor([0, 0, 1, 1]), batch_size=1)
