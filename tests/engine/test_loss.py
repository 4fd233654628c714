"""smoothed_cross_entropy against PointMLP's one-hot formula written out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pointset.engine.loss import smoothed_cross_entropy


def reference(logits, target, eps):
    # one_hot * (1 - eps) + (1 - one_hot) * eps / (C - 1), then -sum(q * log_softmax)
    n = logits.size(1)
    one_hot = torch.zeros_like(logits).scatter(1, target.view(-1, 1), 1)
    q = one_hot * (1 - eps) + (1 - one_hot) * eps / (n - 1)
    return -(q * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def test_matches_pointmlp_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 15, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 15, (16,), generator=g)
    ours = smoothed_cross_entropy(logits, target, 0.2)
    ref = reference(logits, target, 0.2)
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours, logits)
    (g2,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g1, g2)


def test_eps_zero_is_cross_entropy():
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(
        smoothed_cross_entropy(logits, target, 0.0), F.cross_entropy(logits, target)
    )
