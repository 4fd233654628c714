"""Memory-bounded window sums for the joint bilateral upsampler (grid and point layouts).

Each function evaluates a ``T``-tap filter one tap at a time, so no ``[..., C, T]`` tensor is
ever formed, and its backward pass does the same (autograd over the tap loop would keep one
gathered ``[N, C]`` copy per tap). All of them are exact sums; only the order of the
additions differs from an unfold formulation.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _taps(diameter: int):
    for i in range(diameter):
        for j in range(diameter):
            yield i * diameter + j, i, j


def _channel_dot(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out[n, y, x] = sum_c a[n, c, y, x] * b[n, c, y, x]`` without an ``[N, C, H, W]``
    temporary (channel by channel on large maps, where the temporary's page faults cost
    more than the loop)."""
    if a[0, 0].numel() < 4096:
        out.copy_((a * b).sum(1))
        return
    out.zero_()
    for c in range(a.size(1)):
        out.addcmul_(a[:, c], b[:, c])


class _ShiftedSum(torch.autograd.Function):
    """``out[b,c,y,x] = sum_{i,j} kernel[b, i*D+j, y, x] * padded[b, c, y+i, x+j]``."""

    @staticmethod
    def forward(ctx, kernel: Tensor, padded: Tensor, diameter: int) -> Tensor:
        b, _, h, w = kernel.shape
        out = padded.new_zeros(b, padded.size(1), h, w)
        for p, i, j in _taps(diameter):
            out.addcmul_(kernel[:, p : p + 1], padded[:, :, i : i + h, j : j + w])
        ctx.save_for_backward(kernel, padded)
        ctx.diameter = diameter
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        kernel, padded = ctx.saved_tensors
        _, _, h, w = kernel.shape
        grad_kernel = grad_padded = None
        if ctx.needs_input_grad[0]:
            grad_kernel = torch.empty_like(kernel)
        if ctx.needs_input_grad[1]:
            grad_padded = torch.zeros_like(padded)
        for p, i, j in _taps(ctx.diameter):
            window = padded[:, :, i : i + h, j : j + w]
            if grad_kernel is not None:
                _channel_dot(grad, window, grad_kernel[:, p])
            if grad_padded is not None:
                grad_padded[:, :, i : i + h, j : j + w].addcmul_(grad, kernel[:, p : p + 1])
        return grad_kernel, grad_padded, None


def shifted_sum(kernel: Tensor, padded: Tensor, diameter: int) -> Tensor:
    """Apply a per-pixel ``D x D`` filter: ``kernel [B, D*D, H, W]``, ``padded [B, C, H+D-1,
    W+D-1]`` -> ``[B, C, H, W]`` (taps row-major, as ``nn.Unfold``)."""
    return _ShiftedSum.apply(kernel, padded, diameter)


def shifted_dot(keys: Tensor, padded: Tensor, diameter: int) -> Tensor:
    """``out[b, i*D+j, y, x] = <keys[b, :, y, x], padded[b, :, y+i, x+j]>``: ``[B, D*D, H, W]``.

    Autograd handles it: the saved tensors are views, so memory stays ``O(B K H W)``.
    """
    h, w = keys.shape[-2:]
    return torch.stack(
        [(padded[:, :, i : i + h, j : j + w] * keys).sum(1) for _, i, j in _taps(diameter)], 1
    )


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``[N, C], [N, C] -> [N]`` row-wise dot products (a batched matmul: no ``[N, C]``
    temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _GatherSum(torch.autograd.Function):
    """``out[n] = sum_s weight[n, s] * value[index[n, s]]`` (``index`` entries all valid)."""

    @staticmethod
    def forward(ctx, weight: Tensor, index: Tensor, value: Tensor) -> Tensor:
        out = value.new_zeros(weight.size(0), value.size(1))
        for s in range(weight.size(1)):
            out.addcmul_(weight[:, s : s + 1], value.index_select(0, index[:, s]))
        ctx.save_for_backward(weight, index, value)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        weight, index, value = ctx.saved_tensors
        grad_weight = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.empty_like(weight)
        if ctx.needs_input_grad[2]:
            grad_value = torch.zeros_like(value)
        for s in range(weight.size(1)):
            if grad_weight is not None:
                grad_weight[:, s] = _row_dot(grad, value.index_select(0, index[:, s]))
            if grad_value is not None:
                grad_value.index_add_(0, index[:, s], grad * weight[:, s : s + 1])
        return grad_weight, None, grad_value


def gather_sum(weight: Tensor, index: Tensor, value: Tensor) -> Tensor:
    """Weighted sum over gathered rows: ``weight [N, T]``, ``index [N, T]`` (long, into
    ``value``), ``value [M, C]`` -> ``[N, C]``."""
    return _GatherSum.apply(weight, index, value)


class _GatherDot(torch.autograd.Function):
    """``out[n, s] = <query[n], key[index[n, s]]>``."""

    @staticmethod
    def forward(ctx, query: Tensor, index: Tensor, key: Tensor) -> Tensor:
        out = query.new_empty(index.shape)
        for s in range(index.size(1)):
            out[:, s] = _row_dot(query, key.index_select(0, index[:, s]))
        ctx.save_for_backward(query, index, key)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        query, index, key = ctx.saved_tensors
        grad_query = grad_key = None
        if ctx.needs_input_grad[0]:
            grad_query = torch.zeros_like(query)
        if ctx.needs_input_grad[2]:
            grad_key = torch.zeros_like(key)
        for s in range(index.size(1)):
            g = grad[:, s : s + 1]
            if grad_query is not None:
                grad_query.addcmul_(g, key.index_select(0, index[:, s]))
            if grad_key is not None:
                grad_key.index_add_(0, index[:, s], g * query)
        return grad_query, None, grad_key


def gather_dot(query: Tensor, index: Tensor, key: Tensor) -> Tensor:
    """Dot products with gathered rows: ``query [N, K]``, ``index [N, T]``, ``key [M, K]``
    -> ``[N, T]``."""
    return _GatherDot.apply(query, index, key)


def cloud_knn(
    pos: Tensor,
    query: Tensor,
    k: int,
    batch: Tensor | None,
    batch_query: Tensor | None,
    counts: list[int],
    counts_query: list[int],
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``pos`` points of every query, within its cloud, padded.

    Returns ``index [Nq, k]`` (long; ``-1`` where a cloud has fewer than ``k`` points) and
    ``sq_dist [Nq, k]`` (``inf`` at the padding), in ascending distance, ties to the lower
    index (the order of :func:`pointset.ops.knn`). Clouds with at least ``k`` points are
    searched in one call; smaller ones one at a time with all their points.
    """
    from pointset.ops.prechecked import knn

    nq = query.size(0)
    index = torch.full((nq, k), -1, dtype=torch.long, device=query.device)
    if min(counts) >= k:
        edge = knn(pos, query, k, batch, batch_query)
        index = edge[1].view(nq, k)
    else:
        start, start_q = 0, 0
        for n, nq_b in zip(counts, counts_query):
            kb = min(k, n)
            edge = knn(pos[start : start + n], query[start_q : start_q + nq_b], kb)
            index[start_q : start_q + nq_b, :kb] = edge[1].view(nq_b, kb) + start
            start, start_q = start + n, start_q + nq_b
    valid = index >= 0
    safe = index.clamp_min(0)
    diff = pos[safe] - query.unsqueeze(1)
    sq = diff.square().sum(-1).masked_fill(~valid, float("inf"))
    return index, sq
