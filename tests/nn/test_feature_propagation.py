"""Tests for pointset/nn/feature_propagation.py."""

from __future__ import annotations

import pytest
import torch

from pointset.nn import FeaturePropagation
from pointset.nn.feature_propagation import interpolate_dense, interpolate_packed


def _brute_force(xyz, xyz_coarse, x_coarse, k=3):
    """All pairwise squared distances, a full sort, the k nearest, 1 / (d^2 + 1e-8)."""
    d2 = ((xyz.unsqueeze(2) - xyz_coarse.unsqueeze(1)) ** 2).sum(-1)  # [B, N, S]
    d2, idx = d2.sort(dim=-1, stable=True)
    d2, idx = d2[..., :k], idx[..., :k]
    w = 1.0 / (d2 + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    out = torch.zeros(xyz.size(0), x_coarse.size(1), xyz.size(1), dtype=xyz.dtype)
    for b in range(xyz.size(0)):
        for i in range(xyz.size(1)):
            out[b, :, i] = (x_coarse[b][:, idx[b, i]] * w[b, i]).sum(-1)
    return out


@pytest.mark.parametrize("coarse", [1, 2, 7])
def test_interpolation_matches_brute_force(coarse):
    """Oracle: brute-force pairwise distances and a full sort (float64)."""
    g = torch.Generator().manual_seed(coarse)
    xyz = torch.rand(2, 20, 3, generator=g, dtype=torch.float64)
    xyz_coarse = xyz[:, :coarse].clone()  # coarse points coincide with fine ones, as after FPS
    x_coarse = torch.randn(2, 5, coarse, generator=g, dtype=torch.float64)
    out = interpolate_dense(xyz, xyz_coarse, x_coarse)
    torch.testing.assert_close(out, _brute_force(xyz, xyz_coarse, x_coarse), rtol=0, atol=1e-12)
    # a fine point sitting on a coarse point takes (almost exactly) its feature
    torch.testing.assert_close(out[:, :, :coarse], x_coarse, rtol=0, atol=1e-4)


def test_layer_shapes_keys_and_bad_skip():
    """Oracle: the official submodule names and the documented shapes."""
    layer = FeaturePropagation(12 + 8, 16, blocks=2)
    assert {k.split(".")[0] for k in layer.state_dict()} == {"fuse", "extraction"}
    assert "extraction.operation.1.net2.1.weight" in layer.state_dict()
    xyz, xyz_coarse = torch.rand(2, 30, 3), torch.rand(2, 6, 3)
    out = layer.forward_dense(xyz, xyz_coarse, torch.rand(2, 8, 30), torch.rand(2, 12, 6))
    assert out.shape == (2, 16, 30)
    with pytest.raises(ValueError, match=r"\[B, 8, L\]"):
        layer.forward_dense(xyz, xyz_coarse, torch.rand(2, 7, 30), torch.rand(2, 12, 6))
    with pytest.raises(ValueError, match="must match xyz_coarse"):
        layer.forward_dense(xyz, xyz_coarse, torch.rand(2, 8, 30), torch.rand(2, 12, 5))


def test_packed_path_equals_dense_path():
    """Oracle: the dense path on the same clouds (interpolation and the whole layer)."""
    torch.manual_seed(0)
    layer = FeaturePropagation(6 + 4, 8).eval()
    pos, pos_coarse = torch.rand(3, 25, 3), torch.rand(3, 7, 3)
    skip, coarse = torch.randn(3, 4, 25), torch.randn(3, 6, 7)
    batch = torch.arange(3).repeat_interleave(25)
    batch_coarse = torch.arange(3).repeat_interleave(7)
    flat = interpolate_packed(
        pos.reshape(-1, 3),
        pos_coarse.reshape(-1, 3),
        coarse.transpose(1, 2).reshape(-1, 6),
        batch,
        batch_coarse,
    )
    dense = interpolate_dense(pos, pos_coarse, coarse)
    torch.testing.assert_close(flat, dense.transpose(1, 2).reshape(-1, 6))
    with torch.no_grad():
        packed = layer(
            skip.transpose(1, 2).reshape(-1, 4),
            pos.reshape(-1, 3),
            batch,
            x_coarse=coarse.transpose(1, 2).reshape(-1, 6),
            pos_coarse=pos_coarse.reshape(-1, 3),
            batch_coarse=batch_coarse,
        )
        expected = layer.forward_dense(pos, pos_coarse, skip, coarse)
    torch.testing.assert_close(packed, expected.transpose(1, 2).reshape(-1, 8))
