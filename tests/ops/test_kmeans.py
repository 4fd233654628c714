"""Tests for ``pointset.ops.kmeans``.

Oracles: :func:`lloyd_reference`, Lloyd's algorithm written here in numpy with loops over
clouds and clusters (assign by argmin of squared distances, move each non-empty cluster to
its mean, keep empty clusters, stop on the largest displacement <= tol); and a brute-force
numpy argmin for the nearest-center property of the returned assignment.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.ops import fps, kmeans


def lloyd_reference(x, batch, init, k, iters, tol):
    x, batch, centers = x.numpy(), batch.numpy(), init.numpy().copy()
    clouds = int(batch.max()) + 1

    def assign(centers):
        out = np.empty(x.shape[0], dtype=np.int64)
        for b in range(clouds):
            members = np.nonzero(batch == b)[0]
            c = centers[b * k : (b + 1) * k]
            d = ((x[members, None, :] - c[None, :, :]) ** 2).sum(-1)
            out[members] = b * k + d.argmin(1)
        return out

    for _ in range(iters):
        a = assign(centers)
        updated = centers.copy()
        for j in range(clouds * k):
            if (a == j).any():
                updated[j] = x[a == j].mean(0)
        shift = np.linalg.norm(updated - centers, axis=1).max()
        centers = updated
        if shift <= tol:
            break
    return assign(centers), centers


def nearest_center(x, centers, batch, center_batch):
    d = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    d[batch[:, None] != center_batch[None, :]] = np.inf
    return d.argmin(1)


def make_clouds(sizes, dim, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    blobs = torch.randn(len(sizes), 4, dim, generator=gen, dtype=torch.float64) * 3
    parts = []
    for b, n in enumerate(sizes):
        which = torch.randint(0, 4, (n,), generator=gen)
        parts.append(blobs[b, which] + torch.randn(n, dim, generator=gen, dtype=torch.float64))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.cat(parts).to(dtype), batch


def test_kmeans_equals_numpy_lloyd():
    """Given initial centers: assignment and centers == lloyd_reference (unequal clouds)."""
    x, batch = make_clouds([120, 35, 80], 3, seed=1)
    init = torch.cat([x[:4], x[120:124], x[155:159]])
    result = kmeans(x, 4, batch, iters=15, init=init, tol=0.0)
    assignment, centers = lloyd_reference(x, batch, init, 4, 15, 0.0)
    assert result.assignment.tolist() == assignment.tolist()
    assert np.allclose(result.centers.numpy(), centers, rtol=0, atol=1e-12)
    assert result.center_batch.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_fps_init_is_farthest_point_sampling():
    """init="fps" == explicit init from fps(x, batch, num=k), and == lloyd_reference."""
    x, batch = make_clouds([60, 90], 2, seed=2)
    init = x[fps(x, batch, num=5)]
    ours = kmeans(x, 5, batch, iters=8)
    explicit = kmeans(x, 5, batch, iters=8, init=init)
    assert torch.equal(ours.centers, explicit.centers)
    assert torch.equal(ours.assignment, explicit.assignment)
    assignment, centers = lloyd_reference(x, batch, init, 5, 8, 1e-6)
    assert ours.assignment.tolist() == assignment.tolist()
    assert np.allclose(ours.centers.numpy(), centers, rtol=0, atol=1e-12)


def test_empty_cluster_keeps_its_center():
    """A center no point is nearest to stays where it was (lloyd_reference does the same)."""
    x, batch = make_clouds([50], 2, seed=3)
    init = torch.cat([x[:2], torch.tensor([[100.0, 100.0]], dtype=torch.float64)])
    result = kmeans(x, 3, batch, iters=5, init=init)
    assert result.centers[2].tolist() == [100.0, 100.0]
    assert not bool((result.assignment == 2).any())
    _, centers = lloyd_reference(x, batch, init, 3, 5, 1e-6)
    assert np.allclose(result.centers.numpy(), centers, rtol=0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(3, 40), min_size=1, max_size=4),
    dim=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    init=st.sampled_from(["fps", "random"]),
    iters=st.integers(0, 6),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_assignment_is_nearest_center(sizes, dim, dtype, init, iters, seed, data):
    """Random batches: every point is assigned to the nearest center of its own cloud
    (brute-force argmin), cluster ids are cloud * k + local id, centers are finite."""
    k = data.draw(st.integers(1, min(sizes)))
    x, batch = make_clouds(sizes, dim, seed, dtype)
    result = kmeans(
        x, k, batch, iters=iters, init=init, generator=torch.Generator().manual_seed(seed)
    )
    assert result.centers.shape == (len(sizes) * k, dim) and result.centers.dtype == dtype
    assert bool(torch.isfinite(result.centers).all())
    expected = nearest_center(
        x.double().numpy(),
        result.centers.double().numpy(),
        batch.numpy(),
        result.center_batch.numpy(),
    )
    d_ours = ((x - result.centers[result.assignment]) ** 2).sum(-1).double().numpy()
    d_best = ((x.double().numpy() - result.centers.double().numpy()[expected]) ** 2).sum(-1)
    assert np.allclose(d_ours, d_best, rtol=1e-5, atol=1e-6)
    assert (result.assignment // k).tolist() == batch.tolist()


def test_random_init_draws_distinct_points_of_each_cloud():
    """init="random", iters=0: centers are k distinct points of their own cloud, and the same
    generator seed gives the same centers (oracle: membership check by loop)."""
    x, batch = make_clouds([30, 12], 2, seed=4)
    a = kmeans(x, 6, batch, iters=0, init="random", generator=torch.Generator().manual_seed(7))
    b = kmeans(x, 6, batch, iters=0, init="random", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.centers, b.centers)
    for cloud in range(2):
        members = x[batch == cloud]
        rows = []
        for center in a.centers[cloud * 6 : (cloud + 1) * 6]:
            match = (members == center).all(1).nonzero().view(-1)
            assert match.numel() == 1
            rows.append(int(match))
        assert len(set(rows)) == 6


def test_tol_stops_early():
    """A huge tol stops after one round: equal to iters=1 (oracle: the iters=1 run)."""
    x, batch = make_clouds([80], 3, seed=5)
    stopped = kmeans(x, 4, batch, iters=50, tol=1e9)
    one = kmeans(x, 4, batch, iters=1)
    assert torch.equal(stopped.centers, one.centers)


def test_docstring_example():
    """The example in the kmeans docstring."""
    x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    result = kmeans(x, k=2)
    assert torch.allclose(result.centers, torch.tensor([[0.05], [5.1]]))
    assert result.assignment.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 4}, "k=4 is larger than cloud 1, which has 3 points"),
        ({"k": 0}, "k must be an int >= 1"),
        ({"batch": torch.tensor([0] * 5 + [2] * 3)}, "cloud 1, which has 0 points"),
        ({"iters": -1}, "iters must be an int >= 0"),
        ({"tol": -1.0}, "tol must be >= 0"),
        ({"init": "kmeans++"}, "init must be 'fps', 'random' or a tensor"),
        ({"init": torch.zeros(3, 2)}, r"init centers must have shape \[4, 2\]"),
        ({"x": torch.full((8, 2), float("nan"))}, "x contains NaN or inf"),
        ({"batch": torch.tensor([1] * 5 + [0] * 3)}, "batch must be sorted"),
    ],
)
def test_bad_input_raises(kwargs, message):
    """Invalid input raises ValueError naming the problem."""
    args = {"x": torch.rand(8, 2), "k": 2, "batch": torch.tensor([0] * 5 + [1] * 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kmeans(**args)


def test_inputs_that_require_grad_give_centers_without_gradient():
    """Oracle: the same call on detached input; the documented contract that centers carry
    no gradient."""
    torch.manual_seed(0)
    x = torch.rand(60, 3, requires_grad=True)
    out = kmeans(x, 3)
    ref = kmeans(x.detach(), 3)
    assert torch.equal(out.assignment, ref.assignment)
    assert torch.equal(out.centers, ref.centers)
    assert not out.centers.requires_grad
