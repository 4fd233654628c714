"""Batched k-means (Lloyd's algorithm) over the clouds of a packed point set.

Every cloud gets its own ``k`` centers; all clouds iterate together:

1. assignment: each point goes to its nearest center of the same cloud
   (:func:`pointset.ops.nearest`, ties to the lower center index);
2. update: each center moves to the mean of its points. A center that received no point
   keeps its previous position (it may win points back later);
3. stop after ``iters`` rounds, or earlier once no center moved by more than ``tol``.

The returned assignment is the nearest-center assignment for the returned centers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._checks import check_batch, check_points
from ._clouds import Clouds
from .nearest import nearest


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans` (unpacks as a tuple)."""

    assignment: Tensor
    """``[N]`` long global cluster id of every point: ``cloud * k + local id``."""
    centers: Tensor
    """``[B * k, D]`` centers, ``k`` per cloud in batch order."""
    center_batch: Tensor
    """``[B * k]`` cloud index of every center."""


def _random_init(
    x: Tensor, batch: Tensor, ptr: Tensor, k: int, generator: torch.Generator | None
) -> Tensor:
    """``k`` distinct points per cloud, uniformly at random: ``[B * k]`` indices."""
    gen_device = generator.device if generator is not None else x.device
    keys = torch.rand(x.size(0), generator=generator, device=gen_device, dtype=torch.float64)
    # Sort by cloud, then by the random key: the first k of each cloud are a uniform sample.
    order = torch.argsort(batch.double() + keys.to(x.device))
    offsets = torch.arange(k, device=x.device)
    return order[(ptr.unsqueeze(1) + offsets).view(-1)]


def kmeans(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    iters: int = 20,
    init: str | Tensor = "fps",
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> KMeansResult:
    """k-means with ``k`` clusters in every cloud of ``x``.

    Args:
        x: ``[N, D]`` points (positions or feature vectors).
        k: clusters per cloud, >= 1; a cloud with fewer than ``k`` points raises
            ``ValueError``.
        batch: ``[N]`` sorted cloud index of each point, or ``None``.
        iters: at most this many Lloyd rounds (>= 0).
        init: ``"fps"`` (farthest point sampling from each cloud's first point;
            deterministic), ``"random"`` (``k`` distinct points per cloud drawn with
            ``generator``) or a ``[B * k, D]`` tensor of initial centers.
        tol: stop once the largest center displacement of a round is ``<= tol``.
        generator: random source for ``init="random"``.
        backend: backend of the nearest-center search (see :func:`pointset.ops.nearest`).

    Returns:
        :class:`KMeansResult` ``(assignment [N], centers [B * k, D], center_batch [B * k])``.
        The centers carry no gradient, even when ``x`` requires grad: k-means is run on
        ``x.detach()``. (For a differentiable update, average ``x`` over ``assignment``.)

    Example::

        >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
        >>> kmeans(x, k=2).centers
        tensor([[0.0500],
                [5.1000]])
    """
    check_points(x, "x")
    x = x.detach()
    batch = check_batch(batch, x.size(0), "batch")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    clouds = Clouds.from_batch(batch, x.size(0), x.device, trusted=True)
    batch = clouds.batch
    small = np.flatnonzero(clouds.counts_np < k)
    if small.size > 0:
        b = int(small[0])
        raise ValueError(
            f"k={k} is larger than cloud {b}, which has {clouds.counts_list[b]} points"
        )
    num_clouds = clouds.num_clouds
    center_batch = Clouds.from_lengths([k] * num_clouds, device=x.device).batch

    if isinstance(init, Tensor):
        if init.shape != (num_clouds * k, x.size(1)):
            raise ValueError(
                f"init centers must have shape [{num_clouds * k}, {x.size(1)}] "
                f"({num_clouds} clouds x k={k}), got {tuple(init.shape)}"
            )
        check_points(init, "init")
        centers = init.to(dtype=x.dtype, device=x.device).clone()
    elif init == "fps":
        from .fps import fps

        centers = x[fps(x, batch if num_clouds > 1 else None, num=k)]
    elif init == "random":
        centers = x[_random_init(x, batch, clouds.ptr[:-1], k, generator)]
    else:
        raise ValueError(f"init must be 'fps', 'random' or a tensor of centers, got {init!r}")

    for _ in range(iters):
        assignment = nearest(x, centers, batch, center_batch, backend=backend)
        index = assignment.unsqueeze(1).expand_as(x)
        # Mean of each cluster; clusters without points keep their center (include_self=False).
        updated = centers.scatter_reduce(0, index, x, reduce="mean", include_self=False)
        shift = float((updated - centers).norm(dim=1).max())
        centers = updated
        if shift <= tol:
            break
    assignment = nearest(x, centers, batch, center_batch, backend=backend)
    return KMeansResult(assignment, centers, center_batch)
