"""torch-cluster's functions with torch-cluster's exact signatures and defaults, on pointset.

``import pointset.ops.torch_cluster_compat as torch_cluster`` lets code written for
torch-cluster run where it is not installed (it is source-only on PyPI). Every function takes
torch-cluster's arguments in torch-cluster's order with its defaults, including the ones
pointset's own operators leave out (``random_start=True`` for FPS, ``cosine``,
``num_workers``, ``batch_size``, ``ptr``); the work is done by :mod:`pointset.ops`, so the
answers follow pointset's deterministic rules:

* kNN and nearest: ties go to the lower index; radius keeps the ``max_num_neighbors``
  lowest indices (torch-cluster's CPU kd-tree keeps an arbitrary subset).
* A cloud with fewer than ``k`` points gives all of them (as torch-cluster does), where
  :func:`pointset.ops.knn` raises.
* Graphs without self loops never contain a point as its own neighbour, and have at most
  ``k`` (``max_num_neighbors``) neighbours per point; torch-cluster asks for one more and
  drops self loops afterwards, which can leave ``k + 1`` among duplicate points.
* ``fps``: ``ceil(ratio * n)`` samples per cloud with the ceiling taken exactly on the
  ratio's decimal value (``ratio=0.28`` of 25 points gives 7), see :func:`pointset.ops.fps`.
  A random start is drawn from torch's global generator.
* ``num_workers`` is accepted and ignored: pointset's backends choose their own threads.
* ``grid_cluster``: points outside ``[start, end]`` raise ``ValueError`` (torch-cluster
  gives them ids of other voxels).

:func:`pointset.ops.patch_pyg` installs these functions under PyTorch Geometric's pooling
functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_batch
from ._clouds import Clouds
from .fps import fps as _fps
from .knn import knn as _knn
from .knn import knn_graph as _knn_graph
from .nearest import nearest as _nearest
from .radius import radius as _radius
from .radius import radius_graph as _radius_graph
from .voxel_grid import voxel_grid as _voxel_grid

__all__ = ["fps", "grid_cluster", "knn", "knn_graph", "nearest", "radius", "radius_graph"]


def _check_workers(num_workers: int) -> None:
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")


def _batch_of(batch: Tensor | None, num: int, batch_size: int | None, name: str):
    """A checked batch vector (``None`` kept) and the number of clouds."""
    batch = check_batch(batch, num, name)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    found = 1 if batch is None or batch.numel() == 0 else int(batch[-1]) + 1
    if batch_size is not None and batch_size < found:
        raise ValueError(f"batch_size={batch_size} but {name} holds cloud {found - 1}")
    return batch, max(found, batch_size or 0)


def _counts(batch: Tensor | None, num: int, size: int) -> Tensor:
    """Points per cloud ``[size]`` (CPU) of a checked batch vector."""
    clouds = Clouds.from_batch(batch, num, num_clouds=size, trusted=True)
    return torch.from_numpy(clouds.counts_np)


def _cosine(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Unit vectors: their squared Euclidean distance is ``2 - 2 cos``, so the Euclidean
    order is the cosine-distance order."""
    for name, t in (("x", x), ("y", y)):
        if t.dim() == 2 and bool((t.norm(dim=1) == 0).any()):
            raise ValueError(f"cosine distance is undefined for a zero vector in {name}")
    return torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)


def _subset(batch: Tensor | None, num: int, clouds: Tensor, device) -> Tensor:
    """Rows ``[S]`` whose cloud is one of ``clouds`` (``batch=None``: every row is cloud 0)."""
    if batch is None:
        return torch.arange(num if bool((clouds == 0).any()) else 0, device=device)
    return torch.isin(batch, clouds.to(batch.device)).nonzero().view(-1)


def _knn_any_size(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None,
    batch_y: Tensor | None,
    size: int,
    loop: bool | None,
) -> Tensor:
    """kNN (``loop is None``) or a kNN graph, each cloud giving ``min(k, available)``
    neighbours. Returns ``[2, E]`` (query, neighbour) grouped by query."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    graph = loop is not None
    avail = _counts(batch_x, x.size(0), size) - (1 if graph and not loop else 0)
    per_cloud = avail.clamp(min=0, max=k)
    if bool((per_cloud == k).all()):
        if graph:
            return _knn_graph(x, k, batch_x, loop=loop, flow="target_to_source")
        return _knn(x, y, k, batch_x, batch_y)
    rows, cols = [], []
    for k_eff in per_cloud.unique().tolist():
        if k_eff == 0:
            continue
        clouds = (per_cloud == k_eff).nonzero().view(-1)
        ix = _subset(batch_x, x.size(0), clouds, x.device)
        iy = ix if graph else _subset(batch_y, y.size(0), clouds, y.device)
        if iy.numel() == 0:
            continue
        bx = None if batch_x is None else batch_x[ix]
        if graph:
            edge = _knn_graph(x[ix], k_eff, bx, loop=loop, flow="target_to_source")
        else:
            by = None if batch_y is None else batch_y[iy]
            edge = _knn(x[ix], y[iy], k_eff, bx, by)
        rows.append(iy[edge[0]])
        cols.append(ix[edge[1]])
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    row, col = torch.cat(rows), torch.cat(cols)
    order = torch.sort(row, stable=True).indices  # group by query, keep each query's order
    return torch.stack([row[order], col[order]])


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
) -> Tensor:
    """torch-cluster's ``knn``: for every point of ``y`` its ``k`` nearest points of ``x``.

    Args:
        x: ``[N, D]`` points searched. y: ``[M, D]`` queries.
        k: neighbours per query (fewer where a cloud of ``x`` has fewer points).
        batch_x, batch_y: ``[N]`` / ``[M]`` sorted cloud indices, or ``None``.
        cosine: rank by cosine distance instead of Euclidean.
        num_workers: accepted for compatibility; pointset picks its own threads.
        batch_size: number of clouds, or ``None`` to count them.

    Returns:
        ``[2, E]`` long: row 0 indexes ``y``, row 1 ``x``; grouped by query, nearest first.
    """
    _check_workers(num_workers)
    x = x.view(-1, 1) if x.dim() == 1 else x
    y = y.view(-1, 1) if y.dim() == 1 else y
    batch_x, size_x = _batch_of(batch_x, x.size(0), batch_size, "batch_x")
    batch_y, size_y = _batch_of(batch_y, y.size(0), batch_size, "batch_y")
    if cosine:
        x, y = _cosine(x, y)
    return _knn_any_size(x, y, k, batch_x, batch_y, max(size_x, size_y), None)


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
) -> Tensor:
    """torch-cluster's ``knn_graph``: edges to the ``k`` nearest points of each point.

    Args:
        x: ``[N, D]`` points. k: neighbours per point (itself excluded unless ``loop``).
        batch: ``[N]`` sorted cloud index, or ``None``.
        loop: count every point as its own neighbour.
        flow: ``"source_to_target"`` (row 0 neighbours, row 1 centers) or the reverse.
        cosine, num_workers, batch_size: as in :func:`knn`.

    Returns:
        ``[2, E]`` long edge index.
    """
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
    _check_workers(num_workers)
    x = x.view(-1, 1) if x.dim() == 1 else x
    batch, size = _batch_of(batch, x.size(0), batch_size, "batch")
    if cosine:
        x, _ = _cosine(x, x)
    edge = _knn_any_size(x, x, k, batch, batch, size, bool(loop))
    return edge.flip(0) if flow == "source_to_target" else edge


def radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    max_num_neighbors: int = 32,
    num_workers: int = 1,
    batch_size: int | None = None,
) -> Tensor:
    """torch-cluster's ``radius``: for every point of ``y`` the points of ``x`` closer than
    ``r`` (strict), at most ``max_num_neighbors`` of them (the lowest indices).

    Returns:
        ``[2, E]`` long: row 0 indexes ``y``, row 1 ``x``; grouped by query, ascending.
    """
    _check_workers(num_workers)
    x = x.view(-1, 1) if x.dim() == 1 else x
    y = y.view(-1, 1) if y.dim() == 1 else y
    batch_x, _ = _batch_of(batch_x, x.size(0), batch_size, "batch_x")
    batch_y, _ = _batch_of(batch_y, y.size(0), batch_size, "batch_y")
    if x.size(0) == 0 or y.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return _radius(x, y, r, batch_x, batch_y, max_num_neighbors)


def radius_graph(
    x: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int = 32,
    flow: str = "source_to_target",
    num_workers: int = 1,
    batch_size: int | None = None,
) -> Tensor:
    """torch-cluster's ``radius_graph``: edges between points closer than ``r`` (strict).

    Returns:
        ``[2, E]`` long edge index (``flow`` as in :func:`knn_graph`).
    """
    _check_workers(num_workers)
    x = x.view(-1, 1) if x.dim() == 1 else x
    batch, _ = _batch_of(batch, x.size(0), batch_size, "batch")
    if x.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return _radius_graph(x, r, batch, loop, max_num_neighbors, flow)


def nearest(
    x: Tensor,
    y: Tensor,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
) -> Tensor:
    """torch-cluster's ``nearest``: ``[N]`` index of the nearest ``y`` point (same cloud)
    of every ``x`` point, ties to the lower index."""
    x = x.view(-1, 1) if x.dim() == 1 else x
    y = y.view(-1, 1) if y.dim() == 1 else y
    return _nearest(x, y, batch_x, batch_y)


def fps(
    src: Tensor,
    batch: Tensor | None = None,
    ratio: float | Tensor | None = None,
    random_start: bool = True,
    batch_size: int | None = None,
    ptr: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """torch-cluster's ``fps``: farthest point sampling of ``ceil(ratio * n)`` points per
    cloud (``ratio`` 0.5 when ``None``; a float, a 0-dim tensor or one per cloud ``[B]``).

    Args:
        src: ``[N, D]`` points.
        batch: ``[N]`` sorted cloud index, or ``None``.
        ratio: fraction to keep per cloud.
        random_start: start each cloud at a random point (torch's global generator),
            otherwise at its first point.
        batch_size: number of clouds, or ``None`` to count them.
        ptr: ``[B + 1]`` cloud offsets, instead of ``batch``.

    Returns:
        ``[M]`` long indices into ``src``, cloud by cloud, in selection order.
    """
    src = src.view(-1, 1) if src.dim() == 1 else src
    if ptr is not None:
        if batch is not None:
            raise ValueError("give either batch or ptr, not both")
        clouds = Clouds.from_ptr(ptr, src.size(0), src.device)
        batch = clouds.batch
        batch_size = clouds.num_clouds if batch_size is None else batch_size
    batch, size = _batch_of(batch, src.size(0), batch_size, "batch")
    return _fps(
        src,
        batch,
        ratio=0.5 if ratio is None else ratio,
        random_start=bool(random_start),
        batch_size=size,
    )


def grid_cluster(
    pos: Tensor,
    size: Tensor,
    start: Tensor | None = None,
    end: Tensor | None = None,
) -> Tensor:
    """torch-cluster's ``grid_cluster``: ``[N]`` voxel id of every point of ``pos: [N, D]``
    for voxels of ``size: [D]`` from ``start`` (default ``pos.min(0)``) to ``end``
    (default ``pos.max(0)``), first coordinate fastest (see :func:`pointset.ops.voxel_grid`)."""
    pos = pos.view(-1, 1) if pos.dim() == 1 else pos
    return _voxel_grid(pos, size, None, start, end)
