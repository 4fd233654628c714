"""Tests for pointset/models/kmax_seg.py.

Oracles: the protocol's shapes, each cloud run alone (for a batch), a hand-computed product
of the two softmaxes (semantic scores), and a decreasing loss on a tiny overfit problem.
Most tests run the kMaX decoder on a small stand-in backbone that returns the backbone
protocol's structure (decoder levels coarse to fine, each level a subset of the input
points); the registered model is tested on its PointMLP segmentation backbone.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pointset.models import create_model, model_card
from pointset.models.kmax_seg import KMaXSeg

SMALL = dict(
    num_queries=6,
    query_dim=16,
    base_filters=8,
    num_heads=2,
    pixel_head_dim=16,
    mask_dim=8,
    ffn_dim=32,
)


class StandInBackbone(nn.Module):
    """Per-point MLP features; level ``l`` keeps the first ``N / 4^(S-1-l)`` points."""

    def __init__(self, in_channels=6, dims=(24, 20, 12)):
        super().__init__()
        self.decoder_channels = list(dims)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv1d(in_channels, d, 1), nn.Tanh()) for d in dims
        )

    def reset_parameters(self):
        for h in self.heads:
            h[0].reset_parameters()

    def forward(self, points):
        n, levels = points.size(2), len(self.heads)
        decoder = []
        for i, head in enumerate(self.heads):
            keep = n // 4 ** (levels - 1 - i)
            sub = points[:, :, :keep]
            decoder.append((sub[:, :3], head(sub)))
        return SimpleNamespace(decoder=decoder)


def _model(num_classes=3, seed=0, **kw):
    torch.manual_seed(seed)
    return KMaXSeg(num_classes, backbone=StandInBackbone(), **{**SMALL, **kw})


def _points(b=2, n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(b, 3, n, generator=g), torch.rand(b, 3, n, generator=g)], 1)


def test_forward_shapes():
    """Oracle: the segmentation protocol's output shapes (6 layers, two per level)."""
    model = _model(num_classes=4, num_scales=2)
    out = model(_points())
    assert out["logits"].shape == (2, 32, 4)
    assert out["class_logits"].shape == (2, 6, 5)
    assert out["mask_logits"].shape == (2, 32, 6)
    assert out["semantic_logits"].shape == (2, 32, 4)
    assert [a["mask_logits"].shape[1] for a in out["aux"]] == [2, 2, 8, 8]
    assert [tuple(a["index"].shape) for a in out["aux"]] == [(2, 2), (2, 2), (2, 8), (2, 8)]
    assert torch.equal(out["aux"][2]["index"][0], torch.arange(8))  # levels are input subsets
    assert len(model._kmax_transformer_layers) == 4
    assert "KMaXSeg(num_classes=4" in repr(model)


def test_semantic_scores_are_the_product_of_the_two_softmaxes():
    """Oracle: sum_l softmax_l(mask) * softmax(class)[:K], recomputed by hand."""
    model = _model().eval()
    out = model(_points())
    mask = out["mask_logits"].softmax(-1)
    cls = out["class_logits"].softmax(-1)[..., :3]
    expected = torch.stack([mask[b] @ cls[b] for b in range(2)])
    torch.testing.assert_close(out["logits"].exp(), expected)


def test_batch_equals_clouds_one_at_a_time():
    """Oracle: each cloud run alone (eval mode): the packed k-means layers never mix clouds."""
    model = _model().eval()
    points = _points(b=3)
    with torch.no_grad():
        out = model(points)
        for b in range(3):
            alone = model(points[b : b + 1])
            torch.testing.assert_close(out["logits"][b], alone["logits"][0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                out["class_logits"][b], alone["class_logits"][0], atol=1e-5, rtol=1e-5
            )


def test_loss_decreases_on_a_tiny_overfit_problem():
    """Oracle: training on two fixed clouds lowers the kMaX loss and fits the labels
    (labels from the sign pattern of x and y, 3 classes, some ignored points)."""
    torch.manual_seed(0)
    model = _model()
    points = _points(b=2, n=32, seed=3)
    labels = (points[:, 0] > 0).long() + (points[:, 1] > 0.5).long()
    labels[:, ::11] = -1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, parts = model.loss(model(points), labels)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # train mode: the BN running statistics (momentum 0.01) lag behind
        out = model(points)
        last, parts = model.loss(out, labels)
    assert float(last) < 0.5 * first
    valid = labels >= 0
    accuracy = (out["logits"].argmax(-1)[valid] == labels[valid]).float().mean()
    assert accuracy > 0.9, parts
    assert set(parts) == {"class", "dice", "mask", "semantic", "total"}


def test_bad_arguments():
    """Oracle: the constructor's contract."""
    with pytest.raises(ValueError, match="num_scales"):
        KMaXSeg(3, backbone=StandInBackbone(), num_scales=4)
    with pytest.raises(ValueError, match="backbone arguments"):
        KMaXSeg(3, backbone=StandInBackbone(), points=64)
    with pytest.raises(ValueError, match="bn_momentum"):
        KMaXSeg(3, backbone=StandInBackbone(), bn_momentum=0.0)


def test_bn_momentum_sets_the_decoder_norms_only():
    """Oracle: the official momentum 0.01 by default; ``bn_momentum`` sets it on every
    BatchNorm of the kMaX decoder and heads, and leaves the backbone's untouched."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)

    def momenta(model):
        return {name: m.momentum for name, m in model.named_modules() if isinstance(m, norms)}

    default, fast = momenta(_model()), momenta(_model(bn_momentum=0.1))
    assert default and set(default.values()) == {0.01}
    assert fast.keys() == default.keys() and set(fast.values()) == {0.1}
    torch.manual_seed(0)
    backbone = StandInBackbone()
    backbone.heads[0].append(nn.BatchNorm1d(24))
    model = KMaXSeg(3, backbone=backbone, bn_momentum=0.3, **SMALL)
    assert model.backbone.heads[0][2].momentum == 0.1  # PyTorch's default, kept
    assert model._predictor is not None and set(momenta(model).values()) == {0.1, 0.3}


def test_registered_model_with_the_pointmlp_backbone():
    """Oracle: the protocol (registered name, default_cfg, output shapes, a finite loss)
    for ``pointmlp_kmax_seg`` on its PointMLP segmentation backbone."""
    card = model_card("pointmlp_kmax_seg")
    assert card.default_cfg["task"] == "segmentation" and card.default_cfg["call"] == "points"
    default = create_model("pointmlp_kmax_seg")
    assert sum(p.numel() for p in default.parameters()) == card.default_cfg["param_count"]
    assert len(default._kmax_transformer_layers) == 6
    torch.manual_seed(0)
    model = create_model(
        "pointmlp_kmax_seg",
        num_classes=4,
        **SMALL,
        points=64,
        embed_dim=8,
        k_neighbors=[4, 4, 4, 4],
        reducers=[2, 2, 2, 2],
        de_dims=[16, 16, 8, 8],
        pre_blocks=[1, 1, 1, 1],
        pos_blocks=[1, 1, 1, 1],
        de_blocks=[1, 1, 1, 1],
    )
    points = _points(b=2, n=64)
    out = model(points)
    assert out["logits"].shape == (2, 64, 4)
    assert [a["mask_logits"].shape[1] for a in out["aux"]] == [8, 8, 16, 16, 32, 32]
    labels = torch.randint(0, 4, (2, 64))
    loss, _ = model.loss(out, labels)
    loss.backward()
    assert torch.isfinite(loss)
