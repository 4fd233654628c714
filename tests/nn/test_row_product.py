"""``linear_rows``: the same product as ``F.linear`` (the oracle) on every path, with
gradients; large float32 CPU products take the oneDNN convolution, the rest ``F.linear``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointset.nn import _row_product
from pointset.nn._row_product import linear_rows


@pytest.mark.parametrize(
    "shape, c_out, dtype, onednn",
    [
        ((1024, 128), 128, torch.float32, True),
        ((2, 512, 96), 128, torch.float32, True),  # leading dims
        ((64, 1024), 1024, torch.float32, False),  # few rows
        ((512, 3), 8, torch.float32, False),  # tiny product
        ((1024, 128), 128, torch.float64, False),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_rows_equals_f_linear_with_gradients(shape, c_out, dtype, onednn, bias, monkeypatch):
    calls = []
    conv2d = F.conv2d
    monkeypatch.setattr(
        _row_product.F, "conv2d", lambda *a, **k: calls.append(1) or conv2d(*a, **k)
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(c_out, shape[-1], generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(c_out, generator=gen, dtype=dtype, requires_grad=True) if bias else None
    got = linear_rows(x, w, b)
    assert bool(calls) == onednn
    want = F.linear(x, w, b)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=0, atol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    seed = torch.randn(got.shape, generator=gen, dtype=dtype)
    grads = torch.autograd.grad((got * seed).sum(), [x, w] + ([b] if bias else []))
    wants = torch.autograd.grad((want * seed).sum(), [x, w] + ([b] if bias else []))
    for g, e in zip(grads, wants):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-3 if dtype == torch.float32 else 1e-10)


def test_linear_rows_takes_strided_rows():
    """A transposed (non-contiguous) input gives F.linear's answer through the oneDNN path."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1024, generator=gen).t()  # [1024, 128], strides (1, 1024)
    w = torch.randn(128, 128, generator=gen)
    torch.testing.assert_close(linear_rows(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)
