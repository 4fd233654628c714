"""Tests for pointset/nn/kmeans_cross_attention.py.

Oracles: the official kMaX layer's intermediates in ``kmax_small.pt`` (mask logits,
assignment, k-means sum), a brute-force Python loop over points and clusters written here,
each cloud run alone, and hand-made ties.
"""

from __future__ import annotations

import json

import pytest
import torch

from pointset.nn import KMaXDecoderLayer, KMeansCrossAttention


def brute_force(x, centers, value, batch):
    """Per point: logits against its own cloud's centers, first argmax, then sums per cluster."""
    b, length, _ = centers.shape
    update = torch.zeros(b, length, value.size(1), dtype=value.dtype)
    logits = torch.zeros(x.size(0), length, dtype=x.dtype)
    assignment = torch.zeros(x.size(0), dtype=torch.long)
    for i in range(x.size(0)):
        best = None
        for l_ in range(length):
            logits[i, l_] = sum(
                float(x[i, e]) * float(centers[batch[i], l_, e]) for e in range(x.size(1))
            )
            if best is None or logits[i, l_] > logits[i, best]:
                best = l_
        assignment[i] = best
        update[batch[i], best] += value[i]
    return update, logits, assignment


def _ragged(seed, sizes=(5, 1, 8), e=3, v=4, length=4):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, e, generator=g, dtype=torch.float64)
    centers = torch.randn(len(sizes), length, e, generator=g, dtype=torch.float64)
    value = torch.randn(n, v, generator=g, dtype=torch.float64)
    batch = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    return x, centers, value, batch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    """Oracle: brute-force loop (own-cloud logits, first argmax, per-cluster sums)."""
    x, centers, value, batch = _ragged(seed)
    step = KMeansCrossAttention()(x, None, batch, centers=centers, value=value)
    update, logits, assignment = brute_force(x, centers, value, batch)
    torch.testing.assert_close(step.mask_logits, logits, atol=1e-12, rtol=0)
    assert torch.equal(step.assignment, assignment)
    torch.testing.assert_close(step.update, update, atol=1e-12, rtol=0)


def test_equal_clouds_take_the_batched_path_with_the_same_numbers():
    """Oracle: brute-force loop, for equal-sized clouds (the batched-matmul branch)."""
    x, centers, value, batch = _ragged(3, sizes=(6, 6))
    step = KMeansCrossAttention()(x, None, batch, centers=centers, value=value)
    update, logits, assignment = brute_force(x, centers, value, batch)
    torch.testing.assert_close(step.mask_logits, logits, atol=1e-12, rtol=0)
    assert torch.equal(step.assignment, assignment)
    torch.testing.assert_close(step.update, update, atol=1e-12, rtol=0)


def test_packed_equals_one_cloud_at_a_time():
    """Oracle: each cloud run alone."""
    x, centers, value, batch = _ragged(4, sizes=(3, 7, 2))
    layer = KMeansCrossAttention()
    step = layer(x, None, batch, centers=centers, value=value)
    for b in range(3):
        sel = batch == b
        alone = layer(x[sel], None, None, centers=centers[b : b + 1], value=value[sel])
        assert torch.equal(step.update[b], alone.update[0])
        assert torch.equal(step.assignment[sel], alone.assignment)


def test_ties_go_to_first_cluster_and_empty_clusters_are_zero():
    """Oracle: hand-made ties: clusters 1 and 2 are identical, so every point that prefers
    them goes to 1; cluster 2 and the far cluster 0 stay empty with a zero update."""
    centers = torch.tensor([[[-5.0, 0.0], [1.0, 1.0], [1.0, 1.0]]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]])
    value = torch.tensor([[1.0], [10.0], [100.0]])
    step = KMeansCrossAttention()(x, None, None, centers=centers, value=value)
    assert step.assignment.tolist() == [1, 1, 1]
    assert step.update[0, :, 0].tolist() == [0.0, 111.0, 0.0]


def test_no_gradient_through_the_assignment():
    """Oracle: the k-means update is a sum of values under a constant one-hot assignment:
    d update / d value is the assignment indicator, and x / centers get no gradient from it."""
    x, centers, value, batch = _ragged(5)
    x.requires_grad_()
    centers.requires_grad_()
    value.requires_grad_()
    step = KMeansCrossAttention()(x, None, batch, centers=centers, value=value)
    step.update.sum().backward()
    assert x.grad is None and centers.grad is None
    torch.testing.assert_close(value.grad, torch.ones_like(value))


def test_logit_norm_applies_before_argmax():
    """Oracle: a negative-scale norm turns the argmax into the argmin of the raw logits."""
    x, centers, value, batch = _ragged(6)
    raw = KMeansCrossAttention()(x, None, batch, centers=centers, value=value)
    flipped = KMeansCrossAttention()(
        x, None, batch, centers=centers, value=value, logit_norm=lambda t: -2.0 * t
    )
    torch.testing.assert_close(flipped.mask_logits, -2.0 * raw.mask_logits)
    assert torch.equal(flipped.assignment, raw.mask_logits.argmin(dim=1))


@pytest.mark.parametrize("case", ["a", "b"])
def test_official_fixture_step(shared_dir, case):
    """Oracle: kmax_small.pt intermediates of the official layer: from its pixel embeddings,
    the mask kernels of its ``query_space`` and its ``pixel_value``, the step reproduces
    ``mask_logits`` (after the 1-channel BN), ``assignment`` exactly, and ``kmeans_sum``."""
    data = torch.load(shared_dir / "reference/fixtures/kmax_small.pt", weights_only=True)
    widths = {int(k): v for k, v in json.loads(data["width_map_json"]).items()}
    layer = KMaXDecoderLayer.from_official(
        json.loads(data["config_json"]),
        pixel_head_dim=widths[256],
        embed_dim=widths[128],
        ffn_dim=widths[2048],
    )
    layer.load_state_dict(data["state_dict"], strict=True)
    layer.eval()
    c = data[case]
    b, e, h, w = c["pixel_feature"].shape
    feature = c["pixel_feature"].flatten(2).transpose(1, 2).reshape(-1, e)
    value = c["pixel_value"].flatten(2).transpose(1, 2).reshape(b * h * w, -1)
    batch = torch.arange(b).repeat_interleave(h * w)
    with torch.no_grad():
        kernels = layer._predcitor.mask_kernels(c["query_space"])
        step = layer.kmeans(
            feature,
            None,
            batch,
            centers=kernels,
            value=value,
            logit_norm=layer._predcitor._pixel_space_mask_batch_norm,
        )
    expected = c["mask_logits"].flatten(2).transpose(1, 2).reshape(b * h * w, -1)
    torch.testing.assert_close(step.mask_logits, expected, atol=5e-5, rtol=1e-5)
    assert torch.equal(step.assignment, c["assignment"].flatten())
    torch.testing.assert_close(step.update.transpose(1, 2), c["kmeans_sum"], atol=5e-5, rtol=1e-5)


def test_bad_input_raises_value_error():
    """Oracle: the input contract; each bad input raises ValueError naming the problem."""
    x, centers, value, batch = _ragged(7)
    layer = KMeansCrossAttention()
    with pytest.raises(ValueError, match="channels"):
        layer(x[:, :2], None, batch, centers=centers, value=value)
    with pytest.raises(ValueError, match="rows"):
        layer(x, None, batch, centers=centers, value=value[:-1])
    with pytest.raises(ValueError, match="cloud 1 is empty"):
        layer(x[:5], None, torch.tensor([0, 0, 0, 2, 2]), centers=centers, value=value[:5])
    with pytest.raises(ValueError, match="names 3 clouds but centers hold 2"):
        layer(x, None, batch, centers=centers[:2], value=value)
    with pytest.raises(ValueError, match="0 points"):
        layer(x[:0], None, batch[:0], centers=centers, value=value[:0])
    bad = x.clone()
    bad[4, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(bad, None, batch, centers=centers, value=value)
    with pytest.raises(ValueError, match="rank 3"):
        layer(x, None, batch, centers=centers[0], value=value)
