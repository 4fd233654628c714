"""Ball query: the first ``k`` points within radius ``r`` of every query, padded to ``[M, k]``.

This is :func:`pointset.ops.radius` in a dense layout: same backends, same rule (strict
``d^2 < r^2``, the ``k`` lowest ``x`` indices of the query's cloud, in ascending order).

Relation to PointNet++: its ``ball_query`` kernel also scans points in index order with a
strict ``d^2 < r^2`` and keeps the first ``nsample`` hits, but it fills the unused slots with
the first hit, so every slot holds a valid index (and a query with no hit at all gets index
0, a point that may lie far away). ``pad="first"`` reproduces the first-hit filling; a query
with no hit keeps ``-1`` there, and ``mask`` always tells the real hits apart.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import measured
from ._clouds import Clouds
from ._radius_search import check_count, check_pair, check_radius
from .radius import radius_edges

_PADS = ("none", "first")


def ball_query(
    x: Tensor,
    y: Tensor,
    r: float,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    pad: str = "none",
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """For every query of ``y``, the first ``k`` points of ``x`` (lowest indices) of its
    cloud with ``|y_i - x_j|^2 < r^2``.

    Args:
        x: ``[N, D]`` points searched.
        y: ``[M, D]`` queries (same dtype and device as ``x``).
        r: radius, > 0.
        k: slots per query, >= 1.
        batch_x: ``[N]`` sorted cloud index of each ``x`` point, or ``None`` (one cloud).
        batch_y: ``[M]`` sorted cloud index of each query, or ``None``.
        pad: ``"none"``: unused slots hold ``-1``; ``"first"``: they repeat the query's first
            hit, as PointNet++ does (queries without any hit keep ``-1``).
        backend: force a backend, as in :func:`pointset.ops.radius`.

    Returns:
        ``(idx [M, k] long, mask [M, k] bool)``: ``idx`` indexes ``x`` (hits in ascending
        order first), ``mask`` is true on the real hits.

    Example::

        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
        >>> idx, mask = ball_query(x, torch.tensor([[0.9, 0.0]]), r=1.0, k=3)
        >>> idx
        tensor([[ 0,  1, -1]])
        >>> mask
        tensor([[ True,  True, False]])
    """
    return _ball_query(x, y, r, k, batch_x, batch_y, pad, backend, trusted=False)


def ball_query_prechecked(
    x: Tensor,
    y: Tensor,
    r: float,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    pad: str = "none",
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`ball_query` without the checks of ``x``, ``y``, ``batch_x`` and ``batch_y``
    (the caller's obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _ball_query(x, y, r, k, batch_x, batch_y, pad, backend, trusted=True)


def _ball_query(x, y, r, k, batch_x, batch_y, pad, backend, trusted: bool):
    if pad not in _PADS:
        raise ValueError(f"pad must be one of {', '.join(map(repr, _PADS))}, got {pad!r}")
    r = check_radius(r)
    k = check_count(k, "k")
    cx, cy = check_pair(x, y, batch_x, batch_y, trusted=trusted)
    row, col = radius_edges(measured(x), measured(y), cx, cy, r, k, backend, "ball_query")
    # The hits of query i fill slots 0, 1, ... of row i: pack them as clouds of hits.
    idx = Clouds.from_batch(row, row.numel(), trusted=True, num_clouds=y.size(0))
    idx = idx.to_padded(col, fill=-1, width=k)
    mask = idx >= 0
    if pad == "first":
        idx = torch.where(mask, idx, idx[:, :1])
    return idx, mask
