"""Feature math shared by the AutoFocusFormer layers: relative-position features and
memory-bounded neighbour gather products (pure PyTorch, any device).

The neighbourhoods themselves (positions only) are the op
:func:`pointset.ops.cluster_neighbourhood`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pointset.ops.cluster_neighbourhood import Neighbourhood, gather_tokens

#: Elements of gathered neighbour features held at once; queries are processed in chunks
#: so that ``chunk * M * C`` stays below this bound (forward and backward).
CHUNK_ELEMENTS = 1 << 22

#: Logit added to padding members of a cluster, as in the reference (not ``-inf``).
PAD_LOGIT = -100.0


def rel_pos_features(delta: Tensor) -> Tensor:
    r"""Relative-position features of AFF: ``delta [..., D] -> [..., 2D + 1]``.

    For 2-D offsets ``(dx, dy)`` these are the reference's five entries
    ``(dx, dy, r, dy / r, dx / r)`` with ``r = sqrt(dx^2 + dy^2)`` (distance, sine, cosine),
    the direction entries set to 0 at ``r = 0``. In ``D`` dimensions: the ``D`` offsets, the
    distance, then the unit vector in reversed coordinate order, e.g.
    ``(dx, dy, dz, r, dz / r, dy / r, dx / r)`` in 3-D. Distance makes the features rotation
    invariant, the unit vector scale invariant.
    """
    r = delta.pow(2).sum(-1, keepdim=True).sqrt()
    unit = torch.where(r > 0, delta / torch.where(r > 0, r, torch.ones_like(r)), 0.0)
    return torch.cat([delta, r, unit.flip(-1)], dim=-1)


def neighbour_offsets(pos: Tensor, nbhd: Neighbourhood) -> Tensor:
    """Offsets ``pos[nbr] - pos[query]``: ``[B, N, M, D]`` (global: ``[B, N, N, D]``)."""
    if nbhd.index is None:
        return pos.unsqueeze(1) - pos.unsqueeze(2)
    return gather_tokens(pos, nbhd.index.expand(pos.size(0), -1, -1)) - pos.unsqueeze(2)


def _chunk(total_rows: int, per_row: int) -> int:
    return max(1, min(total_rows, CHUNK_ELEMENTS // max(1, per_row)))


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values [B, G, S, C]`` at ``index [B, Q, M]`` for every group -> ``[B, G, Q, M, C]``."""
    batch, groups, size, ch = values.shape
    offset = torch.arange(batch * groups, device=index.device).view(batch, groups, 1, 1) * size
    flat = (index.unsqueeze(1) + offset).reshape(-1)
    return values.reshape(-1, ch)[flat].view(batch, groups, *index.shape[1:], ch)


def _dot(q: Tensor, k: Tensor, index: Tensor) -> Tensor:
    """``out[b, h, i, j] = sum_c q[b, h, i, c] * k[b, h', index[b, i, j], c]``.

    ``q [B, H, N, C]``, ``k [B, H', S, C]`` with ``H' = H`` or 1 -> ``[B, H, N, M]``.
    """
    batch, heads, num, ch = q.shape
    kheads, m = k.size(1), index.size(-1)
    out = q.new_empty(batch, heads, num, m)
    step = _chunk(num, batch * m * max(heads, kheads) * ch)
    for i0 in range(0, num, step):
        i1 = min(num, i0 + step)
        kg = _gather_rows(k, index[:, i0:i1])  # [B, H', Q, M, C]
        if kheads == heads:
            part = torch.matmul(q[:, :, i0:i1].unsqueeze(-2), kg.transpose(-1, -2)).squeeze(-2)
        else:  # one shared key head: [B, Q, H, C] @ [B, Q, C, M]
            part = torch.matmul(q[:, :, i0:i1].transpose(1, 2), kg[:, 0].transpose(-1, -2))
            part = part.transpose(1, 2)
        out[:, :, i0:i1] = part
    return out


def _wsum(w: Tensor, v: Tensor, index: Tensor) -> Tensor:
    """``out[b, h, i, c] = sum_j w[b, h, i, j] * v[b, h', index[b, i, j], c]``.

    ``w [B, H, N, M]``, ``v [B, H', S, C]`` with ``H' = H`` or 1 -> ``[B, H, N, C]``.
    """
    batch, heads, num, m = w.shape
    vheads, ch = v.size(1), v.size(-1)
    out = v.new_empty(batch, heads, num, ch)
    step = _chunk(num, batch * m * max(heads, vheads) * ch)
    for i0 in range(0, num, step):
        i1 = min(num, i0 + step)
        vg = _gather_rows(v, index[:, i0:i1])  # [B, H', Q, M, C]
        if vheads == heads:
            part = torch.matmul(w[:, :, i0:i1].unsqueeze(-2), vg).squeeze(-2)
        else:  # one shared value head: [B, Q, H, M] @ [B, Q, M, C]
            part = torch.matmul(w[:, :, i0:i1].transpose(1, 2), vg[:, 0]).transpose(1, 2)
        out[:, :, i0:i1] = part
    return out


def _scatter_outer(a: Tensor, b: Tensor, index: Tensor, shape: torch.Size) -> Tensor:
    """``out[b, h', s, c] += a[b, h, i, j] * b[b, h, i, c]`` over ``index[b, i, j] = s``.

    ``a [B, H, N, M]``, ``b [B, H, N, C]`` -> ``out`` of ``shape = [B, H', S, C]``; with
    ``H' = 1`` the heads are summed.
    """
    batch, heads, num, m = a.shape
    oheads, size, ch = shape[1:]
    out = b.new_zeros(batch * oheads * size, ch)
    offset = torch.arange(batch * oheads, device=index.device).view(batch, oheads, 1, 1) * size
    step = _chunk(num, batch * m * heads * ch)
    for i0 in range(0, num, step):
        i1 = min(num, i0 + step)
        if oheads == heads:
            part = a[:, :, i0:i1].unsqueeze(-1) * b[:, :, i0:i1].unsqueeze(-2)  # [B,H,Q,M,C]
        else:  # heads summed: [B, Q, M, H] @ [B, Q, H, C]
            part = torch.matmul(a[:, :, i0:i1].permute(0, 2, 3, 1), b[:, :, i0:i1].transpose(1, 2))
        rows = (index[:, i0:i1].unsqueeze(1) + offset).reshape(-1, 1).expand(-1, ch)
        out.scatter_add_(0, rows, part.reshape(-1, ch))
    return out.view(shape)


class _NeighbourDot(torch.autograd.Function):
    """Query-key products over gathered neighbours, chunked over queries both ways."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(q, k, index)
        return _dot(q, k, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        q, k, index = ctx.saved_tensors
        grad = grad.contiguous()
        grad_q = _wsum(grad, k, index) if ctx.needs_input_grad[0] else None
        grad_k = _scatter_outer(grad, q, index, k.shape) if ctx.needs_input_grad[1] else None
        return grad_q, grad_k, None


class _NeighbourSum(torch.autograd.Function):
    """Weighted sums of gathered neighbour values, chunked over queries both ways."""

    @staticmethod
    def forward(ctx, w: Tensor, v: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(w, v, index)
        return _wsum(w, v, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        w, v, index = ctx.saved_tensors
        grad = grad.contiguous()
        grad_w = _dot(grad, v, index) if ctx.needs_input_grad[0] else None
        grad_v = _scatter_outer(w, grad, index, v.shape) if ctx.needs_input_grad[1] else None
        return grad_w, grad_v, None


def neighbour_dot(q: Tensor, k: Tensor, index: Tensor) -> Tensor:
    """``q [B, H, N, C]``, ``k [B, H, S, C]``, ``index [B, N, M]`` -> ``[B, H, N, M]``.

    Entry ``(b, h, i, j)`` is ``q[b, h, i] . k[b, h, index[b, i, j]]``. Gathered keys are
    never held for more than a chunk of queries, in forward or backward.
    """
    return _NeighbourDot.apply(q.contiguous(), k.contiguous(), index.contiguous())


def neighbour_sum(w: Tensor, v: Tensor, index: Tensor) -> Tensor:
    """``w [B, H, N, M]``, ``v [B, H or 1, S, C]``, ``index [B, N, M]`` -> ``[B, H, N, C]``.

    Entry ``(b, h, i)`` is ``sum_j w[b, h, i, j] * v[b, h, index[b, i, j]]``; a ``v`` with one
    head is shared by all ``H`` rows of ``w``. Chunked over queries like
    :func:`neighbour_dot`.
    """
    return _NeighbourSum.apply(w.contiguous(), v.contiguous(), index.contiguous())
