"""Tests for pointset/nn/point_reducer.py.

Oracles: ``torch.nn.functional.conv2d`` with the layer's weights (grid reducer), a naive
per-anchor loop with brute-force sorted neighbours (point reducer), and each cloud alone
(packed batches).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointset.nn.point_reducer import GridPointReducer, PointReducer
from pointset.ops import fps


def test_grid_reducer_is_official_strided_conv():
    """Oracle: F.conv2d with kernel 3, stride 2, padding 1 (and the 4/4/0 stem)."""
    torch.manual_seed(0)
    for args, shape in (((8, 12, 3, 2, 1), (2, 8, 9, 9)), ((5, 16, 4, 4, 0), (2, 5, 16, 16))):
        layer = GridPointReducer(*args)
        assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
            "proj.weight": (args[1], args[0], args[2], args[2]),
            "proj.bias": (args[1],),
        }
        x = torch.randn(*shape)
        expected = F.conv2d(x, layer.proj.weight, layer.proj.bias, stride=args[3], padding=args[4])
        torch.testing.assert_close(layer(x), expected)


def test_grid_reducer_packed_equals_image_path():
    """Oracle: the [B, C, H, W] path; grid sizes given per cloud, two different sizes."""
    layer = GridPointReducer(4, 6)
    a, b = torch.randn(2, 4, 8, 6), torch.randn(1, 4, 5, 5)
    packed = torch.cat([a.permute(0, 2, 3, 1).reshape(-1, 4), b.permute(0, 2, 3, 1).reshape(-1, 4)])
    out, grid = layer(packed, grid_size=torch.tensor([[8, 6], [8, 6], [5, 5]]))
    expected = torch.cat(
        [layer(a).permute(0, 2, 3, 1).reshape(-1, 6), layer(b).permute(0, 2, 3, 1).reshape(-1, 6)]
    )
    torch.testing.assert_close(out, expected)
    assert grid.tolist() == [[4, 3], [4, 3], [3, 3]]


def naive_point_reducer(layer: PointReducer, x, pos, anchors):
    """Per anchor: sort all points of the cloud by distance, take k, concatenate
    [feature, relative position] of each, apply the linear layer."""
    rows = []
    for a in anchors.tolist():
        order = torch.sort(((pos - pos[a]) ** 2).sum(1), stable=True).indices[: layer.k]
        parts = []
        for j in order.tolist():
            parts.append(x[j])
            if layer.pos_dim:
                parts.append(pos[j] - pos[a])
        rows.append(torch.cat(parts))
    return torch.stack(rows) @ layer.proj.weight.T + layer.proj.bias


@pytest.mark.parametrize("pos_dim", [0, 2, 3])
def test_point_reducer_equals_naive_loop(pos_dim):
    torch.manual_seed(1)
    d = pos_dim or 3
    layer = PointReducer(5, 7, k=4, ratio=0.25, pos_dim=pos_dim).double()
    x, pos = torch.randn(40, 5, dtype=torch.float64), torch.rand(40, d, dtype=torch.float64)
    out, new_pos, new_batch = layer(x, pos)
    anchors = fps(pos, ratio=0.25)
    torch.testing.assert_close(out, naive_point_reducer(layer, x, pos, anchors))
    torch.testing.assert_close(new_pos, pos[anchors])
    assert new_batch is None and out.shape == (10, 7)


def test_point_reducer_packed_batch_equals_each_cloud_alone():
    torch.manual_seed(2)
    layer = PointReducer(3, 8, k=5, num=6, pos_dim=3).double()
    sizes = [20, 33, 7]
    xs = [torch.randn(n, 3, dtype=torch.float64) for n in sizes]
    ps = [torch.rand(n, 3, dtype=torch.float64) for n in sizes]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    out, pos, new_batch = layer(torch.cat(xs), torch.cat(ps), batch)
    alone = [layer(x, p) for x, p in zip(xs, ps)]
    torch.testing.assert_close(out, torch.cat([a[0] for a in alone]))
    torch.testing.assert_close(pos, torch.cat([a[1] for a in alone]))
    assert new_batch.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_point_reducer_bad_input_raises_value_error():
    layer = PointReducer(3, 8, k=4, pos_dim=3)
    x, pos = torch.randn(10, 3), torch.rand(10, 3)
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        layer(torch.randn(10, 4), pos)
    with pytest.raises(ValueError, match="pos_dim=3"):
        layer(x, torch.rand(10, 2))
    with pytest.raises(ValueError, match="9 points but x has 10"):
        layer(x, torch.rand(9, 3))
    with pytest.raises(ValueError, match="fewer than k=4"):
        layer(x, pos, torch.tensor([0] * 8 + [1] * 2))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, 3), torch.rand(0, 3))
    with pytest.raises(ValueError, match="channels"):
        GridPointReducer(3, 8)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="whole"):
        GridPointReducer(3, 8)(torch.randn(10, 3), grid_size=(3, 3))
