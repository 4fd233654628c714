"""Tests for ``pointset.ops.prechecked``: the operators without their input checks.

Oracles: the public operators (same results on valid input), and call counters wrapped
around ``pointset._checks.check_points`` / ``check_batch`` (hand-counted expectations: a
public operator scans each input tensor once, a prechecked one never).
"""

from __future__ import annotations

import pytest
import torch

from pointset import ops
from pointset.ops import prechecked


def _inputs():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(60, 3, generator=gen)
    # int16 takes the general batch check (int32 / int64 CPU vectors take a NumPy pass).
    batch = torch.tensor([0] * 25 + [1] * 35, dtype=torch.int16)
    return pos, batch


CASES = {
    "fps": (lambda m, p, b: m.fps(p, b, num=5), 1, 1),
    "knn": (lambda m, p, b: m.knn(p, p[::3], 3, b, b[::3]), 2, 2),
    "knn_graph": (lambda m, p, b: m.knn_graph(p, 3, b), 1, 1),
    "radius": (lambda m, p, b: m.radius(p, p[::3], 0.3, b, b[::3]), 2, 2),
    "radius_graph": (lambda m, p, b: m.radius_graph(p, 0.3, b), 1, 1),
    "ball_query": (lambda m, p, b: m.ball_query(p, p[::3], 0.3, 4, b, b[::3]), 2, 2),
    "nearest": (lambda m, p, b: m.nearest(p, p[::3], b, b[::3]), 2, 2),
    "voxel_grid": (lambda m, p, b: m.voxel_grid(p, 0.25, b), 1, 1),
    "voxel_downsample": (lambda m, p, b: m.voxel_downsample(p, 0.25, b, x=p * 2), 1, 1),
    # the padded layout: the 60 points as two clouds of 30 (lengths 25 and 30)
    "balanced_cluster_dense": (
        lambda m, p, b: m.balanced_cluster_dense(p.view(2, 30, 3), 4, torch.tensor([25, 30])),
        1,
        0,
    ),
    "cluster_neighbourhood": (
        lambda m, p, b: m.cluster_neighbourhood(p.view(2, 30, 3), 4, 8, [25, 30]).index,
        1,
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_checks_once_prechecked_never(check_counter, name):
    """The public operator checks every point tensor and batch vector exactly once; the
    prechecked entry checks none, and returns the same result."""
    call, points, batches = CASES[name]
    pos, batch = _inputs()
    expected = call(ops, pos, batch)
    assert check_counter == {"check_points": points, "check_batch": batches}
    check_counter.update(check_points=0, check_batch=0)
    got = call(prechecked, pos, batch.long())
    assert check_counter == {"check_points": 0, "check_batch": 0}
    if isinstance(expected, tuple):
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    else:
        assert torch.equal(expected, got)


def test_prechecked_skips_the_checks_the_public_operator_makes():
    """An unsorted batch is refused by the public operator and not inspected by the
    prechecked one (the caller's obligation)."""
    pos, _ = _inputs()
    unsorted = torch.tensor([1] * 30 + [0] * 30)
    with pytest.raises(ValueError, match="sorted"):
        ops.fps(pos, unsorted, num=3)
    assert prechecked.fps(pos, unsorted, num=3).numel() == 6


def test_prechecked_has_the_public_signatures():
    """Same parameter names, order and defaults as the public operators (oracle: inspect)."""
    import inspect

    for name in prechecked.__all__:
        public = inspect.signature(getattr(ops, name)).parameters
        fast = inspect.signature(getattr(prechecked, name)).parameters
        assert [(p.name, p.default) for p in public.values()] == [
            (p.name, p.default) for p in fast.values()
        ]
