"""Tests for ``pointset.ops.nearest``.

Oracle: :func:`nearest_oracle`, a plain loop written here - for every point, the squared
distances to the centers of its cloud by direct differences in the input dtype, and the
first center (lowest index) at the minimum distance. Grid clouds create
exact ties. torch-cluster's ``nearest`` is the upstream reference on tie-free data.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import _radius_search, nearest
from pointset.ops._backend import is_available, unavailable_reason

BACKENDS = ("native", "scipy")


def need(backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} not installed: {unavailable_reason(backend)}")


def nearest_oracle(x, y, batch_x, batch_y):
    out = []
    for i in range(x.size(0)):
        members = (batch_y == batch_x[i]).nonzero().view(-1)
        d = (y[members, 0] - x[i, 0]) ** 2
        for c in range(1, x.size(1)):
            d = d + (y[members, c] - x[i, c]) ** 2
        first_min = int((d == d.min()).nonzero()[0, 0])  # ties: the lowest index
        out.append(int(members[first_min]))
    return out


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
@pytest.mark.parametrize("grid_bits", [None, 1])
def test_nearest_equals_oracle(backend, dtype, grid_bits):
    """nearest == nearest_oracle on unequal clouds, exact ties to the lower index."""
    need(backend)
    x, batch_x = make_clouds([50, 3, 70], 3, dtype, grid_bits, seed=1)
    y, batch_y = make_clouds([6, 1, 9], 3, dtype, grid_bits, seed=2)
    out = nearest(x, y, batch_x, batch_y, backend=backend)
    assert out.dtype == torch.long
    assert out.tolist() == nearest_oracle(x, y, batch_x, batch_y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", [[400], [300, 500], [4] * 100])
def test_nearest_search_paths(backend, sizes):
    """One cloud, a few large clouds and many small clouds all equal the oracle."""
    need(backend)
    x, batch = make_clouds(sizes, 2, torch.float32, None, seed=3)
    y, batch_y = x[::4] + 0.01, batch[::4]
    assert nearest(x, y, batch, batch_y, backend=backend).tolist() == nearest_oracle(
        x, y, batch, batch_y
    )


def test_high_dimensional_features():
    """More than 8 coordinates (matrix-product distances): same as the oracle on tie-free
    data, padded clouds included."""
    x, batch_x = make_clouds([40, 25], 16, torch.float64, None, seed=4)
    y, batch_y = make_clouds([5, 3], 16, torch.float64, None, seed=5)
    for backend in BACKENDS:
        out = nearest(x, y, batch_x, batch_y, backend=backend)
        assert out.tolist() == nearest_oracle(x, y, batch_x, batch_y)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 6)), min_size=1, max_size=4),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grid_bits=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_property_every_backend_equals_oracle(sizes, dim, dtype, grid_bits, seed):
    """Random batches (points, centers per cloud), 2-D/3-D, f32/f64: backends == oracle."""
    x, batch_x = make_clouds([s[0] for s in sizes], dim, dtype, grid_bits, seed)
    y, batch_y = make_clouds([s[1] for s in sizes], dim, dtype, grid_bits, seed + 1)
    expected = nearest_oracle(x, y, batch_x, batch_y)
    for backend in BACKENDS:
        assert nearest(x, y, batch_x, batch_y, backend=backend).tolist() == expected


def test_native_blocks_do_not_change_the_result(monkeypatch):
    """A tiny block budget gives the same answer as one block (oracle)."""
    x, batch_x = make_clouds([200, 3, 100], 3, torch.float32, 2, seed=6)
    y, batch_y = make_clouds([20, 2, 30], 3, torch.float32, 2, seed=7)
    monkeypatch.setattr(_radius_search, "BLOCK_ELEMENTS", 50)
    out = nearest(x, y, batch_x, batch_y, backend="native")
    assert out.tolist() == nearest_oracle(x, y, batch_x, batch_y)


def test_same_as_torch_cluster():
    """Upstream reference: torch-cluster's nearest on tie-free clouds."""
    need("torch_cluster")
    import torch_cluster

    x, batch_x = make_clouds([50, 70], 3, torch.float32, None, seed=8)
    y, batch_y = make_clouds([5, 8], 3, torch.float32, None, seed=9)
    expected = torch_cluster.nearest(x, y, batch_x, batch_y)
    for backend in BACKENDS:
        assert torch.equal(nearest(x, y, batch_x, batch_y, backend=backend), expected)


def test_docstring_example():
    """The example in the nearest docstring (torch-cluster's example)."""
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    assert nearest(x, y).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_y": torch.tensor([0, 0, 0])}, "cloud 1 has 2 points in x but no point in y"),
        ({"y": torch.empty(0, 2)}, "y is empty"),
        ({"y": torch.rand(3, 3)}, "same number of coordinates"),
        ({"x": torch.tensor([[0.0, float("nan")]] * 5)}, "x contains NaN or inf"),
        ({"batch_x": torch.tensor([1, 1, 1, 0, 0])}, "batch_x must be sorted"),
        ({"backend": "open3d"}, "does not implement nearest"),
    ],
)
def test_bad_input_raises(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    args = {
        "x": torch.rand(5, 2),
        "y": torch.rand(3, 2),
        "batch_x": torch.tensor([0, 0, 0, 1, 1]),
        "batch_y": torch.tensor([0, 1, 1]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        nearest(**args)


def test_inputs_that_require_grad():
    """Oracle: the same call on detached input (indices carry no gradient)."""
    x = torch.rand(30, 2, requires_grad=True)
    assert torch.equal(nearest(x, x[:5]), nearest(x.detach(), x[:5].detach()))
    assert torch.equal(nearest(x, x[:5], backend="native"), nearest(x.detach(), x.detach()[:5]))
