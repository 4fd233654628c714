"""Tests for pointset/nn/point_reducer.py.

Oracles: a naive per-anchor loop with brute-force sorted neighbours, and each cloud alone
(packed batches).
"""

from __future__ import annotations

import pytest
import torch

from pointset.nn import PointReducer
from pointset.ops import fps


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
