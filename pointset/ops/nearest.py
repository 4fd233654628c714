"""Nearest-center assignment: for every point of ``x``, the nearest point of ``y`` in its cloud.

The same contract as torch-cluster's ``nearest``: ``x`` are the points to assign, ``y`` the
centers; the result indexes ``y``. Ties go to the lower ``y`` index (torch-cluster's CUDA
kernel keeps the first minimum it meets; its CPU path calls ``scipy.cluster.vq.vq``, which
also returns the first minimum).

Distances: up to 8 coordinates, direct differences accumulated coordinate by coordinate in
the input dtype (the formula of :func:`pointset.ops.radius`), so ties are exact. With more
coordinates (feature vectors) the native backend uses the expanded form
``|x|^2 - 2 x.y + |y|^2`` with a matrix product, which is much faster there; exact ties
between different centers are then resolved up to that rounding.

Backends: ``native`` (chunked brute force, any device), ``scipy`` (``cKDTree.query`` for
two candidates in float64, settled with pointset's own distances; queries whose two
candidates are too close to call are recomputed natively) and ``triton`` (CUDA; the direct
formula for any number of coordinates, so beyond :data:`DIRECT_MAX_DIM` it is exact where
``native`` rounds the expanded form). :func:`auto` picks one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import measured
from ._backend import select
from ._clouds import Clouds
from ._radius_search import (
    Workspace,
    block_sq_dist,
    check_pair,
    cpu_search_sets,
    iter_blocks,
    native_is_faster_on_cpu,
    search_slack,
)

#: Up to this many coordinates distances use the exact direct-difference formula.
DIRECT_MAX_DIM = 8


def _nearest_native(x: Tensor, y: Tensor, cy: Clouds, cx: Clouds) -> Tensor:
    """``cy`` / ``cx``: the clouds of the centers ``y`` and of the points ``x``."""
    out = torch.empty(x.size(0), dtype=torch.long, device=x.device)
    direct = x.size(1) <= DIRECT_MAX_DIM
    ws = Workspace(x.device)
    fill = math.inf if direct else 0.0
    for qb, q_start, q_count, pb, p_start, p_count in iter_blocks(y, x, cy, cx, fill=fill):
        shape = (qb.size(1), qb.size(2), pb.size(2))
        if direct:
            d = block_sq_dist(qb, pb, ws.get("d", shape, x.dtype), ws.get("w", shape, x.dtype))
        else:
            q = qb.permute(1, 2, 0)  # [C, m, D]
            p = pb.permute(1, 2, 0)  # [C, n, D]
            d = torch.baddbmm(
                p.square().sum(2).unsqueeze(1),
                q,
                p.transpose(1, 2),
                alpha=-2,
                out=ws.get("d", shape, x.dtype),
            )
            d.add_(q.square().sum(2).unsqueeze(2))
            if bool((p_count < shape[2]).any()):
                pad = torch.arange(shape[2], device=x.device) >= p_count.unsqueeze(1)
                d.masked_fill_(pad.unsqueeze(1), math.inf)
        arg = d.argmin(2)  # [C, m]; first minimum = lowest index, padding comes last
        c, i = (torch.arange(shape[1], device=x.device) < q_count.unsqueeze(1)).nonzero(
            as_tuple=True
        )
        out[q_start[c] + i] = p_start[c] + arg[c, i]
    return out


def _nearest_scipy(x: Tensor, y: Tensor, cy: Clouds, cx: Clouds) -> Tensor:
    import numpy as np
    from scipy.spatial import cKDTree

    slack = search_slack(x.dtype, x.size(1))
    lo = torch.minimum(x.min(0).values, y.min(0).values)
    hi = torch.maximum(x.max(0).values, y.max(0).values)
    extent = float((hi - lo).max()) * math.sqrt(x.size(1))
    ys, xs, groups = cpu_search_sets(y, x, cy, cx, gap=2 * extent + 1.0)
    out = torch.empty(x.size(0), dtype=torch.long)
    unsure = torch.zeros(x.size(0), dtype=torch.bool)
    for p0, p1, q0, q1 in groups:
        dist, index = cKDTree(ys[p0:p1]).query(xs[q0:q1], k=2, workers=-1)
        out[q0:q1] = torch.from_numpy(index[:, 0].astype(np.int64)) + p0
        # A second candidate (almost) as near as the first may win in the input dtype.
        unsure[q0:q1] = torch.from_numpy(dist[:, 1] <= dist[:, 0] * (1 + slack))
    if bool(unsure.any()):
        qi = unsure.nonzero().squeeze(1)
        out[qi] = _nearest_native(x[qi], y, cy, cx.subset(qi))
    return out


def _nearest_triton(x: Tensor, y: Tensor, cy: Clouds, cx: Clouds) -> Tensor:
    """The native direct-difference formula for any number of coordinates."""
    from ._triton_launch import knn_search

    _, idx = knn_search(y, x, cy, cx, 1)
    return idx[:, 0] + cy.ptr[:-1][cx.batch]


_IMPLS = {"native": _nearest_native, "scipy": _nearest_scipy, "triton": _nearest_triton}


def auto(device: torch.device, cy: Clouds, cx: Clouds, dim: int) -> tuple[str, ...]:
    """Backends to try for nearest, fastest first: triton then native on CUDA (native
    alone beyond :data:`DIRECT_MAX_DIM` coordinates, where it uses the expanded form), for more than
    :data:`DIRECT_MAX_DIM` coordinates, and on CPU while
    :func:`~pointset.ops._radius_search.native_is_faster_on_cpu` (e.g. 100k points and 64
    centers: native 28 ms, scipy 41 ms; 100k points and 1,024 centers: 237 ms vs 62 ms);
    scipy otherwise."""
    if device.type == "cuda" and dim <= DIRECT_MAX_DIM:
        return ("triton", "native")
    if device.type != "cpu" or dim > DIRECT_MAX_DIM or native_is_faster_on_cpu(cy, cx):
        return ("native",)
    return ("scipy", "native")


def nearest(
    x: Tensor,
    y: Tensor,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Index of the nearest point of ``y`` (same cloud) for every point of ``x``.

    Args:
        x: ``[N, D]`` points to assign.
        y: ``[M, D]`` centers (same dtype and device as ``x``).
        batch_x: ``[N]`` sorted cloud index of each point, or ``None`` (one cloud).
        batch_y: ``[M]`` sorted cloud index of each center, or ``None``. Every cloud that has
            points must have at least one center (``ValueError`` otherwise).
        backend: force a backend (``"native"`` or ``"scipy"``); default: automatic choice.

    Returns:
        ``[N]`` long indices into ``y``; ties go to the lower index.

    Example::

        >>> x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
        >>> nearest(x, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        tensor([0, 0, 1, 1])
    """
    return _nearest(x, y, batch_x, batch_y, backend, trusted=False)


def nearest_prechecked(
    x: Tensor,
    y: Tensor,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """:func:`nearest` without the checks of ``x``, ``y``, ``batch_x`` and ``batch_y`` (the
    caller's obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _nearest(x, y, batch_x, batch_y, backend, trusted=True)


def _nearest(x, y, batch_x, batch_y, backend, trusted: bool) -> Tensor:
    cy, cx = check_pair(y, x, batch_y, batch_x, names=("y", "x"), trusted=trusted)
    for b, (m, n) in enumerate(zip(cy.counts_list, cx.counts_list)):
        if n > 0 and m == 0:
            raise ValueError(f"cloud {b} has {n} points in x but no point in y to assign them to")
    _, impl = select(
        "nearest", _IMPLS, x.device, backend, lambda: auto(x.device, cy, cx, x.size(1))
    )
    return impl(measured(x.detach()), measured(y.detach()), cy, cx)  # indices only
