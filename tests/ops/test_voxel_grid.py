"""Tests for ``pointset.ops.voxel_grid`` (``voxel_grid`` and ``voxel_downsample``).

Oracles: :func:`grid_reference`, a numpy version of the id formula - voxel
``np.floor((pos - start) / size)`` (true division, then floor), id = row-major number with
the first coordinate fastest, the batch as the slowest coordinate - and, for
``voxel_downsample``, a dictionary loop that groups points by (cloud, voxel) and averages.
torch-cluster's ``grid_cluster`` (what PyG's ``voxel_grid`` calls) is the upstream reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import voxel_downsample, voxel_grid
from pointset.ops._backend import is_available


def grid_reference(pos, size, batch=None, start=None, end=None):
    p = pos.numpy()
    size = np.broadcast_to(np.asarray(size, dtype=p.dtype), (p.shape[1],))
    start = p.min(0) if start is None else np.broadcast_to(np.asarray(start, p.dtype), size.shape)
    end = p.max(0) if end is None else np.broadcast_to(np.asarray(end, p.dtype), size.shape)
    cells = np.floor((p - start) / size).astype(np.int64)
    counts = np.trunc((end - start) / size).astype(np.int64) + 1
    ids = np.zeros(p.shape[0], dtype=np.int64)
    stride = 1
    for d in range(p.shape[1]):
        ids += cells[:, d] * stride
        stride *= counts[d]
    if batch is not None:
        ids += batch.numpy() * stride
    return ids.tolist()


def make_clouds(sizes, dim, dtype, seed, scale=10.0):
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.rand(sum(sizes), dim, generator=gen, dtype=torch.float64) * scale - 2).to(dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    dim=st.sampled_from([1, 2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    size=st.sampled_from([0.5, 1.0, 1.7, 3.0, (0.5, 2.0, 1.0)]),
    with_batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_voxel_grid_equals_numpy_reference(sizes, dim, dtype, size, with_batch, seed):
    """voxel_grid == grid_reference for scalar and per-coordinate sizes, with/without batch."""
    pos, batch = make_clouds(sizes, dim, dtype, seed)
    if isinstance(size, tuple):
        size = list(size[:dim])
    b = batch if with_batch else None
    assert voxel_grid(pos, size, b).tolist() == grid_reference(pos, size, b)


def test_start_and_end():
    """Explicit start/end (numbers and tensors) == grid_reference with the same grid."""
    pos, batch = make_clouds([30, 20], 3, torch.float32, seed=1)
    out = voxel_grid(pos, 1.5, batch, start=-3.0, end=torch.tensor([9.0, 8.5, 10.0]))
    assert out.tolist() == grid_reference(pos, 1.5, batch, start=-3.0, end=[9.0, 8.5, 10.0])


def test_same_as_torch_cluster_grid_cluster():
    """Upstream reference: PyG's voxel_grid recipe on torch-cluster's grid_cluster (batch
    appended as a last coordinate of size 1)."""
    if not is_available("torch_cluster"):
        pytest.skip("torch-cluster not installed")
    from torch_cluster import grid_cluster

    pos, batch = make_clouds([40, 25, 30], 3, torch.float32, seed=2)
    size = torch.tensor([0.7, 1.3, 2.0])
    expected = grid_cluster(
        torch.cat([pos, batch.view(-1, 1).float()], 1), torch.cat([size, torch.ones(1)])
    )
    assert torch.equal(voxel_grid(pos, size, batch), expected)
    start, end = torch.tensor([-2.0, -2.5, -3.0]), torch.tensor([9.0, 8.5, 10.0])
    expected = grid_cluster(
        torch.cat([pos, batch.view(-1, 1).float()], 1),
        torch.cat([size, torch.ones(1)]),
        torch.cat([start, torch.zeros(1)]),
        torch.cat([end, batch.max().view(1).float()]),
    )
    assert torch.equal(voxel_grid(pos, size, batch, start, end), expected)


def test_docstring_example():
    """torch-cluster's grid_cluster example, reproduced in the voxel_grid docstring."""
    pos = torch.tensor([[0.0, 0.0], [11.0, 9.0], [2.0, 8.0], [2.0, 2.0], [8.0, 3.0]])
    assert voxel_grid(pos, size=5.0).tolist() == [0, 5, 3, 0, 1]
    pos = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    assert voxel_downsample(pos, size=2.0).pos.tolist() == [[0.5, 0.5], [3.0, 0.0]]


@pytest.mark.parametrize("with_batch", [False, True])
def test_voxel_downsample_equals_loop(with_batch):
    """voxel_downsample == a dictionary loop: one output per (cloud, voxel), ordered by voxel
    id, mean position and features, cluster maps each point to its output row."""
    pos, batch = make_clouds([50, 35], 2, torch.float64, seed=3, scale=4.0)
    x = torch.rand(pos.size(0), 3, 2, dtype=torch.float64)
    b = batch if with_batch else None
    out = voxel_downsample(pos, 1.0, b, x=x)
    ids = grid_reference(pos, 1.0, b)
    groups: dict[int, list[int]] = {}
    for i, v in enumerate(ids):
        groups.setdefault(v, []).append(i)
    keys = sorted(groups)
    assert out.pos.shape == (len(keys), 2) and out.x.shape == (len(keys), 3, 2)
    for row, key in enumerate(keys):
        members = groups[key]
        assert torch.allclose(out.pos[row], pos[members].mean(0))
        assert torch.allclose(out.x[row], x[members].mean(0))
        assert out.cluster[members].tolist() == [row] * len(members)
        if with_batch:
            assert int(out.batch[row]) == int(batch[members[0]])
    assert (out.batch is None) == (not with_batch)
    if with_batch:
        assert bool((out.batch[1:] >= out.batch[:-1]).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0.0}, "size must be > 0"),
        ({"size": [1.0, -1.0]}, "size must be > 0"),
        ({"size": [1.0, 1.0, 1.0]}, "size must have 1 or 2 entries"),
        ({"size": float("inf")}, "size must be finite"),
        ({"size": "big"}, "size must be a number"),
        ({"start": 0.5}, "lies outside the grid"),
        ({"end": [0.5, 0.5]}, "lies outside the grid|is below start"),
        ({"pos": torch.tensor([[0.0, float("nan")]])}, "pos contains NaN or inf"),
        ({"pos": torch.empty(0, 2)}, "pos is empty"),
        ({"batch": torch.tensor([0, 1, 0])}, "batch must be sorted"),
        (
            {"size": 1e-300, "pos": torch.tensor([[0.0, 0.0], [1e10, 1e10]], dtype=torch.float64)},
            "int64",
        ),
    ],
)
def test_bad_input_raises(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    args = {"pos": torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]]), "size": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        voxel_grid(**args)


def test_downsample_bad_features():
    """Features must be floating, one row per point."""
    pos = torch.rand(4, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        voxel_downsample(pos, 0.5, x=torch.rand(3, 2))
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        voxel_downsample(pos, 0.5, x=torch.ones(4, 2, dtype=torch.long))


@pytest.mark.parametrize(
    ("pos", "size"),
    [
        (torch.tensor([[0.0, 0.0], [1e20, 1.0]]), 1.0),  # 1e20 voxels along x
        (torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 1e-30),  # 1e30 voxels per axis
        (torch.tensor([[-3e38, 0.0], [3e38, 1.0]]), 1.0),  # the extent is inf in float32
    ],
)
def test_axis_overflow_is_rejected(pos, size):
    """Oracle: int64 arithmetic. One axis with more voxels than int64 holds used to be cast
    to INT64_MIN and return negative ids; it must raise naming the axis."""
    with pytest.raises(ValueError, match="coordinate 0 spans .* more than int64 ids"):
        voxel_grid(pos, size)
