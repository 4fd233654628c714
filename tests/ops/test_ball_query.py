"""Tests for ``pointset.ops.ball_query``.

Oracle: :func:`ball_oracle`, a plain loop written here - for every query, the points of its
cloud in index order with ``d^2 < r^2`` (direct differences in the input dtype), the first
``k`` written into a ``-1``-filled row. ``pad="first"`` is checked against PointNet++'s
filling rule written out the same way (unused slots repeat the first hit).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import ball_query
from pointset.ops._backend import is_available, unavailable_reason

BACKENDS = ("native", "numba", "scipy", "torch_cluster", "open3d", "pytorch3d")


def need(backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} not installed: {unavailable_reason(backend)}")


def ball_oracle(x, y, r, k, batch_x, batch_y, pad_first=False):
    r2 = torch.tensor(r * r, dtype=x.dtype)
    idx = torch.full((y.size(0), k), -1, dtype=torch.long)
    for i in range(y.size(0)):
        found = 0
        for j in range(x.size(0)):
            if found == k:
                break
            if batch_x[j] != batch_y[i]:
                continue
            d = (x[j, 0] - y[i, 0]) ** 2
            for c in range(1, x.size(1)):
                d = d + (x[j, c] - y[i, c]) ** 2
            if d < r2:
                idx[i, found] = j
                found += 1
        if pad_first and found > 0:
            idx[i, found:] = idx[i, 0]
    return idx


def make_clouds(sizes, dim, dtype, grid_bits, seed):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if grid_bits is None:
        pos = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    else:
        pos = torch.randint(0, 2**grid_bits, (n, dim), generator=gen) / 2**grid_bits
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos.to(dtype), batch


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ball_query_equals_oracle(backend, dtype):
    """idx == ball_oracle (-1 padded), mask == (idx >= 0); unequal clouds, grid ties."""
    need(backend)
    x, batch_x = make_clouds([30, 4, 45], 3, dtype, 2, seed=1)
    y, batch_y = make_clouds([8, 3, 11], 3, dtype, 2, seed=2)
    idx, mask = ball_query(x, y, 0.5, 6, batch_x, batch_y, backend=backend)
    expected = ball_oracle(x, y, 0.5, 6, batch_x, batch_y)
    assert idx.dtype == torch.long and mask.dtype == torch.bool
    assert torch.equal(idx, expected)
    assert torch.equal(mask, expected >= 0)


def test_pad_first_is_pointnet2_filling():
    """pad="first": unused slots repeat the first hit (PointNet++ rule, oracle); a query
    without hits keeps -1; mask is unchanged by the padding mode."""
    x, batch_x = make_clouds([40], 2, torch.float32, 3, seed=3)
    y = torch.cat([x[:6], torch.tensor([[5.0, 5.0]])])
    batch_y = torch.zeros(7, dtype=torch.long)
    idx, mask = ball_query(x, y, 0.3, 5, pad="first")
    assert torch.equal(idx, ball_oracle(x, y, 0.3, 5, batch_x, batch_y, pad_first=True))
    assert idx[-1].tolist() == [-1] * 5
    _, plain_mask = ball_query(x, y, 0.3, 5)
    assert torch.equal(mask, plain_mask)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 25), min_size=1, max_size=3),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grid_bits=st.sampled_from([None, 2]),
    r=st.sampled_from([0.25, 0.5, 0.4]),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_property_every_backend_equals_oracle(sizes, dim, dtype, grid_bits, r, k, seed):
    """Random batches, 2-D/3-D, f32/f64: every installed backend == ball_oracle."""
    x, batch = make_clouds(sizes, dim, dtype, grid_bits, seed)
    expected = ball_oracle(x, x, r, k, batch, batch)
    for backend in BACKENDS:
        if is_available(backend):
            idx, mask = ball_query(x, x, r, k, batch, batch, backend=backend)
            assert torch.equal(idx, expected)
            assert torch.equal(mask, expected >= 0)


def test_docstring_example():
    """The example in the ball_query docstring."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    idx, mask = ball_query(x, torch.tensor([[0.9, 0.0]]), r=1.0, k=3)
    assert idx.tolist() == [[0, 1, -1]] and mask.tolist() == [[True, True, False]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an int >= 1"),
        ({"r": 0}, "r must be a finite number > 0"),
        ({"pad": "zeros"}, "pad must be one of"),
        ({"x": torch.rand(5, 2)}, "same number of coordinates"),
        ({"y": torch.tensor([[float("inf"), 0.0, 0.0]])}, "y contains NaN or inf"),
        ({"batch_x": torch.tensor([0, 1, 1, 0, 1])}, "batch_x must be sorted"),
    ],
)
def test_bad_input_raises(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    args = {"x": torch.rand(5, 3), "y": torch.rand(4, 3), "r": 0.5, "k": 4}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ball_query(**args)


@pytest.mark.parametrize("backend", ["native", None])
def test_inputs_that_require_grad(backend):
    """Oracle: the same call on detached input (indices carry no gradient)."""
    x = torch.rand(40, 3, requires_grad=True)
    idx, mask = ball_query(x, x[:6], 0.4, 5, backend=backend)
    ref_idx, ref_mask = ball_query(x.detach(), x.detach()[:6], 0.4, 5)
    assert torch.equal(idx, ref_idx) and torch.equal(mask, ref_mask)
