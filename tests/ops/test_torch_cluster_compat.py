"""Tests for ``pointset.ops.torch_cluster_compat`` (torch-cluster's signatures on pointset).

Oracles: torch-cluster itself where it is installed and deterministic (its signatures, and
its answers on tie-free clouds with limits that do not cut), brute-force loops written here
(cosine kNN, clouds smaller than k), and hand-computed values.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from pointset.ops import torch_cluster_compat as tc
from pointset.ops._backend import is_available


def clouds(sizes, dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(sizes), dim, generator=gen)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


@pytest.mark.parametrize("name", tc.__all__)
def test_signatures_equal_torch_clusters(name):
    """Every function has torch-cluster's parameter names, order and defaults."""
    if not is_available("torch_cluster"):
        pytest.skip("torch-cluster not installed")
    import torch_cluster

    theirs = inspect.signature(getattr(torch_cluster, name)).parameters
    ours = inspect.signature(getattr(tc, name)).parameters
    assert list(ours) == list(theirs)
    for p in theirs:
        assert ours[p].default == theirs[p].default, p


def test_answers_equal_torch_clusters():
    """knn, knn_graph, radius, radius_graph, nearest, fps, grid_cluster on tie-free clouds
    (radius limits that never cut, FPS from a fixed start) == torch-cluster's tensors."""
    if not is_available("torch_cluster"):
        pytest.skip("torch-cluster not installed")
    import torch_cluster

    x, bx = clouds([40, 30], seed=1)
    y, by = clouds([6, 9], seed=2)
    assert torch.equal(tc.knn(x, y, 4, bx, by), torch_cluster.knn(x, y, 4, bx, by))
    for loop in (False, True):
        for flow in ("source_to_target", "target_to_source"):
            assert torch.equal(
                tc.knn_graph(x, 5, bx, loop, flow), torch_cluster.knn_graph(x, 5, bx, loop, flow)
            )
            ours = tc.radius_graph(x, 0.3, bx, loop, 100, flow)
            theirs = torch_cluster.radius_graph(x, 0.3, bx, loop, 100, flow)
            assert sorted(ours.t().tolist()) == sorted(theirs.t().tolist())
    ours = tc.radius(x, y, 0.4, bx, by, max_num_neighbors=100)
    theirs = torch_cluster.radius(x, y, 0.4, bx, by, max_num_neighbors=100)
    assert sorted(ours.t().tolist()) == sorted(theirs.t().tolist())
    assert torch.equal(tc.nearest(y, x, by, bx), torch_cluster.nearest(y, x, by, bx))
    for ratio in (0.5, 0.28, torch.tensor(0.3)):
        assert torch.equal(
            tc.fps(x, bx, ratio, random_start=False),
            torch_cluster.fps(x, bx, ratio, random_start=False),
        )
    size = torch.tensor([0.25, 0.25, 0.5])
    assert torch.equal(tc.grid_cluster(x, size), torch_cluster.grid_cluster(x, size))


def test_fps_defaults_batch_size_and_ptr():
    """fps's torch-cluster defaults (ratio 0.5, random start from torch's generator), ptr
    instead of batch, batch_size with empty trailing clouds (oracle: hand-computed counts
    and the same call under the same seed)."""
    x, bx = clouds([10, 7])
    torch.manual_seed(3)
    a = tc.fps(x, bx)
    torch.manual_seed(3)
    b = tc.fps(x, ptr=torch.tensor([0, 10, 17]))
    assert torch.equal(a, b) and torch.bincount(bx[a]).tolist() == [5, 4]
    fixed = tc.fps(x, bx, 0.5, False, batch_size=4)
    assert torch.equal(fixed, tc.fps(x, bx, 0.5, False))
    # ptr with an empty first cloud: all points in cloud 1, indices unchanged.
    assert torch.equal(tc.fps(x, None, 0.5, False, ptr=[0, 0, 17]), tc.fps(x, None, 0.5, False))
    with pytest.raises(ValueError, match="batch_size=1 but batch holds cloud 1"):
        tc.fps(x, bx, batch_size=1)
    with pytest.raises(ValueError, match="ptr must run from 0"):
        tc.fps(x, ptr=[0, 5])


def test_knn_gives_all_points_of_clouds_smaller_than_k():
    """A cloud with fewer than k points gives all of them, nearest first, as torch-cluster
    does (oracle: brute force); pointset.ops.knn raises there instead."""
    x, bx = clouds([2, 9], seed=4)
    y, by = clouds([3, 2], seed=5)
    edge = tc.knn(x, y, 4, bx, by)
    want = []
    for i in range(5):
        cand = sorted((float(((x[j] - y[i]) ** 2).sum()), j) for j in range(11) if bx[j] == by[i])
        want += [[i, j] for _, j in cand[:4]]
    assert edge.t().tolist() == want
    graph = tc.knn_graph(x, 4, bx, flow="target_to_source")
    assert torch.bincount(graph[0]).tolist() == [1, 1] + [4] * 9
    assert bool((graph[0] != graph[1]).all())


def test_cosine_knn_equals_brute_force():
    """cosine=True ranks by 1 - cos(x, y) (oracle: brute force on the cosine distance)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    edge = tc.knn(x, y, 3, cosine=True)
    cos = torch.nn.functional.cosine_similarity(y[:, None], x[None], dim=2)
    want = (1 - cos).argsort(dim=1, stable=True)[:, :3]
    assert edge[1].view(4, 3).tolist() == want.tolist()
    with pytest.raises(ValueError, match="zero vector"):
        tc.knn(torch.zeros(3, 2), torch.ones(1, 2), 1, cosine=True)


def test_grid_cluster_hand_computed():
    """grid_cluster ids: first coordinate fastest (hand-computed)."""
    pos = torch.tensor([[0.0, 0.0], [11.0, 9.0], [2.0, 8.0], [2.0, 2.0], [8.0, 3.0]])
    assert tc.grid_cluster(pos, torch.tensor([5.0, 5.0])).tolist() == [0, 5, 3, 0, 1]


def test_empty_inputs_and_bad_arguments():
    """Empty point sets give no edges; bad num_workers / batch_size raise ValueError."""
    assert tc.radius(torch.zeros(0, 3), torch.rand(2, 3), 0.5).shape == (2, 0)
    assert tc.radius_graph(torch.zeros(0, 3), 0.5).shape == (2, 0)
    with pytest.raises(ValueError, match="num_workers"):
        tc.knn(torch.rand(4, 3), torch.rand(2, 3), 1, num_workers=0)
    with pytest.raises(ValueError, match="batch_size"):
        tc.knn(torch.rand(4, 3), torch.rand(2, 3), 1, batch_size=0)
