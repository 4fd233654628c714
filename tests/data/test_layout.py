"""Packed <-> padded layouts (oracles: a numpy loop reference and the round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointset.data import PointSet, from_dense, to_dense


def _numpy_to_dense(x: np.ndarray, batch: np.ndarray, b: int, nmax: int, fill: float):
    dense = np.full((b, nmax, *x.shape[1:]), fill, dtype=x.dtype)
    mask = np.zeros((b, nmax), dtype=bool)
    slot = np.zeros(b, dtype=int)
    for i in range(x.shape[0]):
        j = batch[i]
        dense[j, slot[j]] = x[i]
        mask[j, slot[j]] = True
        slot[j] += 1
    return dense, mask


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    channels=st.integers(1, 4),
    extra=st.integers(0, 3),
    fill=st.sampled_from([0.0, -1.0, 7.5]),
)
def test_to_dense_matches_numpy_loop_and_round_trips(sizes, channels, extra, fill):
    n = sum(sizes)
    x = torch.randn(n, channels)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    nmax = max(sizes) + extra
    dense, mask = to_dense(x, batch, fill_value=fill, max_num=nmax, batch_size=len(sizes))
    ref_dense, ref_mask = _numpy_to_dense(x.numpy(), batch.numpy(), len(sizes), nmax, fill)
    np.testing.assert_array_equal(dense.numpy(), ref_dense)
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    x2, batch2 = from_dense(dense, mask)
    assert torch.equal(x2, x) and torch.equal(batch2, batch)


def test_defaults_single_cloud_and_largest_cloud():
    x = torch.arange(10.0).view(5, 2)
    dense, mask = to_dense(x)
    assert dense.shape == (1, 5, 2) and bool(mask.all())
    dense, mask = to_dense(x, torch.tensor([0, 0, 0, 1, 1]))
    assert dense.shape == (2, 3, 2) and mask.sum().item() == 5


def test_from_dense_without_mask_keeps_everything():
    dense = torch.rand(2, 3, 4)
    x, batch = from_dense(dense)
    assert torch.equal(x, dense.reshape(6, 4))
    assert batch.tolist() == [0, 0, 0, 1, 1, 1]


def test_point_set_method_uses_its_batch():
    """Oracle: the module function on the same tensors."""
    ps = PointSet(x=torch.rand(5, 3), pos=torch.rand(5, 2), batch=torch.tensor([0, 0, 1, 1, 1]))
    dense, mask = ps.to_dense("pos")
    ref = to_dense(ps.pos, ps.batch)
    assert torch.equal(dense, ref[0]) and torch.equal(mask, ref[1])
    with pytest.raises(ValueError, match="no attribute 'normal'"):
        ps.to_dense("normal")


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: to_dense(torch.rand(4, 2), torch.tensor([0, 0, 0, 1]), max_num=2),
            "max_num=2 is smaller than cloud 0",
        ),
        (lambda: to_dense(torch.rand(3, 2), torch.tensor([1, 0, 0])), "non-decreasing"),
        (lambda: to_dense(torch.rand(3, 2), torch.tensor([0, 0])), r"shape \[3\]"),
        (lambda: to_dense(torch.rand(3, 2), torch.tensor([0, 1, 2]), batch_size=2), "batch_size=2"),
        (lambda: from_dense(torch.rand(2, 3, 1), torch.ones(2, 4, dtype=torch.bool)), r"\[2, 3\]"),
        (lambda: from_dense(torch.rand(2, 3, 1), torch.ones(2, 3)), "bool"),
        (lambda: from_dense(torch.rand(3)), r"\[B, Nmax"),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
