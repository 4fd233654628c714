"""Radius neighbourhoods: ``radius`` (bipartite) and ``radius_graph`` (packed PyG layout).

The rule every backend follows (torch-cluster's, where torch-cluster is deterministic):

* a point ``x[j]`` is a neighbour of query ``y[i]`` when both lie in the same cloud and
  ``|y[i] - x[j]|^2 < r^2``: **strictly** inside, as torch-cluster's CPU and CUDA kernels
  and pytorch3d's ``ball_query`` test it. The squared distance is accumulated coordinate by
  coordinate in the input dtype (float32 for float16 / bfloat16 points, on every backend)
  and ``r^2`` is rounded once to that dtype;
* when more than ``max_num_neighbors`` points qualify, the ones with the **lowest** ``x``
  indices are kept. This is what torch-cluster's CUDA kernel does (it scans ``x`` in index
  order and stops at the limit). torch-cluster's CPU kernel instead keeps the first points
  in its kd-tree's traversal order, an arbitrary subset; pointset never does that;
* edges are grouped by query in ascending order, and the neighbours of one query are in
  ascending ``x`` index (torch-cluster on CPU leaves them in tree order).

Backends (see :mod:`pointset.ops._backend` for how one is chosen):

``native``
    chunked brute force in PyTorch, any device. Many small clouds are batched into one
    padded block, a large cloud is split into query blocks.
``numba``
    CPU, 2-D/3-D: a cell grid of edge r / 2 per cloud; each query reads only the cells that
    meet its ball; compiled, parallel over queries, exact.
``scipy``
    ``cKDTree.sparse_distance_matrix`` over all clouds at once (CPU).
``torch_cluster``
    its ``radius`` kernel (CPU kd-tree or CUDA brute force).
``open3d``
    ``open3d.core.nns`` fixed-radius search (CPU).
``pytorch3d``
    ``pytorch3d.ops.ball_query`` on padded clouds.
``triton``
    CUDA (CPU only under ``TRITON_INTERPRET=1``): brute force over each query's cloud in
    tiles, a counting pass and a writing pass, exact (``pointset.ops._triton_kernels``).

Libraries that measure distances differently (in float64, or with fused multiply-adds) are
asked for a radius larger by a few ulps, and their candidates are settled with pointset's own
distance formula, so every backend returns the same edges as ``native``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import measured
from ._backend import select
from ._clouds import Clouds
from ._radius_search import (
    check_count,
    check_pair,
    check_radius,
    cpu_search_sets,
    finalize,
    first_within_native,
    native_is_faster_on_cpu,
    search_slack,
    settle_first_k,
    sq_radius,
    truncate,
)

# ---------------------------------------------------------------------------------------
# backends: (x [N, D], y [M, D], clouds of x, clouds of y, r, k) -> [2, E] (query, point),
# first k within r
# ---------------------------------------------------------------------------------------


def _radius_native(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    return first_within_native(x, y, cx, cy, r, k)


def _radius_numba(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    from ._numba_kernels import radius_grid

    if x.size(1) not in (2, 3):
        raise ValueError(f"backend 'numba' searches 2-D or 3-D points, got {x.size(1)}-D")
    xa, ya = x.detach().numpy(), y.detach().numpy()
    edges = radius_grid(xa, cx.ptr_np[:-1], cx.counts_np, ya, cy.batch_np, r, k)
    return torch.from_numpy(edges)


def _radius_scipy(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    from scipy.spatial import cKDTree

    slack = search_slack(x.dtype, x.size(1))
    r_search = r * (1 + slack)
    same = y is x
    xs, ys, groups = cpu_search_sets(x, y, cx, cy, gap=2 * r_search + 1.0)
    rows, cols, certain = [], [], []
    for p0, p1, q0, q1 in groups:
        tree_x = cKDTree(xs[p0:p1])
        if same:
            # Self join: unordered pairs once, mirrored, plus the zero-distance self pairs.
            pairs = torch.from_numpy(tree_x.query_pairs(r_search, output_type="ndarray"))
            pairs = pairs.to(torch.long) + p0
            diag = torch.arange(p0, p1)
            rows += [pairs[:, 0], pairs[:, 1], diag]
            cols += [pairs[:, 1], pairs[:, 0], diag]
            certain.append(torch.zeros(2 * pairs.size(0) + diag.numel(), dtype=torch.bool))
        else:
            tree_y = cKDTree(ys[q0:q1])
            pairs = tree_y.sparse_distance_matrix(tree_x, r_search, output_type="ndarray")
            rows.append(torch.from_numpy(pairs["i"].astype("int64")) + q0)
            cols.append(torch.from_numpy(pairs["j"].astype("int64")) + p0)
            certain.append(torch.from_numpy(pairs["v"] < r * (1 - slack)))
    if not rows:
        return torch.empty(2, 0, dtype=torch.long)
    return finalize(x, y, torch.cat(rows), torch.cat(cols), r, k, certain=torch.cat(certain))


def _radius_torch_cluster(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    import torch_cluster

    slack = search_slack(x.dtype, x.size(1))
    batched = cx.num_clouds > 1
    batch_x = cx.batch.contiguous() if batched else None
    batch_y = cy.batch.contiguous() if batched else None
    if x.device.type == "cuda":
        # The CUDA kernel keeps the first k in index order, as pointset does.
        edge = torch_cluster.radius(
            x,
            y,
            r * (1 + slack),
            batch_x,
            batch_y,
            max_num_neighbors=k,
            batch_size=cx.num_clouds,
        )
        return settle_first_k(x, y, cx, cy, edge[0], edge[1], r, k)
    # The CPU kernel truncates in kd-tree order: ask for everything, then keep the first k.
    edge = torch_cluster.radius(
        x,
        y,
        r * (1 + slack),
        batch_x,
        batch_y,
        max_num_neighbors=cx.max_count,
        num_workers=torch.get_num_threads(),
        batch_size=cx.num_clouds,
    )
    return finalize(x, y, edge[0], edge[1], r, k)


def _radius_open3d(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    import open3d.core as o3c

    slack = search_slack(x.dtype, x.size(1))
    r_search = r * (1 + slack)
    xs, ys, groups = cpu_search_sets(x, y, cx, cy, gap=2 * r_search + 1.0)
    rows, cols, certain = [], [], []
    for p0, p1, q0, q1 in groups:
        nns = o3c.nns.NearestNeighborSearch(o3c.Tensor.from_numpy(xs[p0:p1]))
        nns.fixed_radius_index(r_search)
        found = nns.fixed_radius_search(o3c.Tensor.from_numpy(ys[q0:q1]), r_search, sort=False)
        index, dist2, splits = (torch.from_numpy(t.numpy()) for t in found)
        rows.append(torch.arange(q0, q1).repeat_interleave(splits[1:] - splits[:-1]))
        cols.append(index.long() + p0)
        certain.append(dist2 < (r * (1 - slack)) ** 2)
    if not rows:
        return torch.empty(2, 0, dtype=torch.long)
    return finalize(x, y, torch.cat(rows), torch.cat(cols), r, k, certain=torch.cat(certain))


def _radius_pytorch3d(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    from pytorch3d.ops import ball_query as p3d_ball_query

    work = torch.float32  # pytorch3d's CPU kernel takes float32 only
    slack = search_slack(work, x.size(1))
    r_search = r * (1 + slack)
    if x.dtype != work:
        # Rounding the coordinates themselves moves points by up to |coord| * eps.
        scale = float(torch.cat([x.abs().max().view(1), y.abs().max().view(1)]).max())
        r_search += 4 * x.size(1) ** 0.5 * scale * torch.finfo(work).eps
    xp = cx.to_padded(x.to(work))
    yp = cy.to_padded(y.to(work))
    counts_x, counts_y = cx.counts, cy.counts
    # No query can have more neighbours than its cloud has points ("keep all" limits).
    k_search = max(1, min(k, cx.max_count))
    _, idx, _ = p3d_ball_query(
        yp, xp, lengths1=counts_y, lengths2=counts_x, K=k_search, radius=r_search, return_nn=False
    )  # idx: [B, M_max, k_search], -1 padded, lowest index first
    b, i, s = (idx >= 0).nonzero(as_tuple=True)
    valid = i < counts_y[b]
    b, i, s = b[valid], i[valid], s[valid]
    row = cy.ptr[b] + i
    col = cx.ptr[b] + idx[b, i, s]
    return settle_first_k(x, y, cx, cy, row, col, r, k)


def _radius_triton(x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int) -> Tensor:
    from ._triton_launch import radius_search, work_dtype

    r2 = float(sq_radius(r, torch.empty(0, dtype=work_dtype(x.dtype))))
    return torch.stack(radius_search(x, y, cx, cy, r2, k))


_IMPLS = {
    "native": _radius_native,
    "triton": _radius_triton,
    "numba": _radius_numba,
    "scipy": _radius_scipy,
    "torch_cluster": _radius_torch_cluster,
    "open3d": _radius_open3d,
    "pytorch3d": _radius_pytorch3d,
}


def auto(device: torch.device, cx: Clouds, cy: Clouds, dim: int) -> tuple[str, ...]:
    """Backends to try for radius search, fastest first.

    CUDA: the triton kernels, then pytorch3d, then native (torch-cluster's CUDA kernel is
    not chosen automatically: an empty cloud in the middle of a batch makes it fail). CPU with 2-D/3-D points:
    the numba cell grid (the fastest measured by ``benchmarks/ops.py`` on both the batched
    and the 200,000-point rows), then native. Other dimensions: the native brute force for
    small problems and batches of small clouds
    (:func:`~pointset.ops._radius_search.native_is_faster_on_cpu`) and beyond 8 coordinates,
    else scipy's kd-tree, then torch-cluster's.
    """
    if device.type == "cuda":
        return ("triton", "pytorch3d", "native")
    if dim in (2, 3):
        return ("numba", "native")
    if dim > 8 or native_is_faster_on_cpu(cx, cy):
        return ("native",)
    return ("scipy", "torch_cluster", "native")


def radius_edges(
    x: Tensor, y: Tensor, cx: Clouds, cy: Clouds, r: float, k: int, backend: str | None, op: str
) -> Tensor:
    """Dispatch the "first k within r" search on validated input: ``[2, E]`` (query, point).

    Only indices come out, so inputs that require grad are searched detached."""
    _, impl = select(op, _IMPLS, x.device, backend, lambda: auto(x.device, cx, cy, x.size(1)))
    return impl(x.detach(), y.detach(), cx, cy, r, k)


def radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    max_num_neighbors: int = 32,
    backend: str | None = None,
) -> Tensor:
    """For every point of ``y``, the points of ``x`` in the same cloud within distance ``r``.

    Args:
        x: ``[N, D]`` points searched.
        y: ``[M, D]`` query points (same dtype and device as ``x``).
        r: radius, > 0; a point counts when its squared distance is ``< r^2`` (strict).
        batch_x: ``[N]`` sorted cloud index of each ``x`` point, or ``None`` (one cloud).
        batch_y: ``[M]`` sorted cloud index of each ``y`` point, or ``None``.
        max_num_neighbors: at most this many neighbours per query: the ones with the lowest
            ``x`` indices.
        backend: force a backend (``"native"``, ``"scipy"``, ``"torch_cluster"``,
            ``"open3d"``, ``"pytorch3d"``); default: automatic choice.

    Returns:
        ``[2, E]`` long: row 0 indexes ``y``, row 1 indexes ``x``; edges grouped by query in
        ascending order, neighbours of a query in ascending ``x`` index. A query whose cloud
        has no point of ``x`` within ``r`` has no edge.

    Example::

        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
        >>> radius(x, torch.tensor([[0.9, 0.0], [2.5, 0.0]]), r=1.0)
        tensor([[0, 0, 1],
                [0, 1, 2]])
    """
    return _radius(x, y, r, batch_x, batch_y, max_num_neighbors, backend, trusted=False)


def radius_prechecked(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    max_num_neighbors: int = 32,
    backend: str | None = None,
) -> Tensor:
    """:func:`radius` without the checks of ``x``, ``y``, ``batch_x`` and ``batch_y`` (the
    caller's obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _radius(x, y, r, batch_x, batch_y, max_num_neighbors, backend, trusted=True)


def _radius(x, y, r, batch_x, batch_y, max_num_neighbors, backend, trusted: bool) -> Tensor:
    r = check_radius(r)
    k = check_count(max_num_neighbors, "max_num_neighbors")
    cx, cy = check_pair(x, y, batch_x, batch_y, trusted=trusted)
    return radius_edges(measured(x), measured(y), cx, cy, r, k, backend, "radius")


def radius_graph(
    x: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int = 32,
    flow: str = "source_to_target",
    backend: str | None = None,
) -> Tensor:
    """The radius graph of a point set: edges between points of one cloud closer than ``r``.

    Args:
        x: ``[N, D]`` points.
        r: radius, > 0 (strict ``d^2 < r^2``, as in :func:`radius`).
        batch: ``[N]`` sorted cloud index of each point, or ``None``.
        loop: keep self loops (every point is its own neighbour, distance 0).
        max_num_neighbors: at most this many neighbours per point, the lowest indices
            (self excluded when ``loop`` is false). torch-cluster asks its kernel for
            ``max_num_neighbors + 1`` and drops the self loop afterwards, so a point whose
            self loop falls beyond the cut keeps ``max_num_neighbors + 1`` neighbours
            there; pointset always keeps at most ``max_num_neighbors``.
        flow: ``"source_to_target"`` (row 0 holds the neighbours, row 1 the centers, as
            message passing expects) or ``"target_to_source"`` (the reverse).
        backend: force a backend, as in :func:`radius`.

    Returns:
        ``[2, E]`` long edge index, grouped by center in ascending order, neighbours of a
        center in ascending index.

    Example::

        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> radius_graph(x, r=1.5)
        tensor([[1, 0],
                [0, 1]])
    """
    return _graph(x, r, batch, loop, max_num_neighbors, flow, backend, trusted=False)


def radius_graph_prechecked(
    x: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int = 32,
    flow: str = "source_to_target",
    backend: str | None = None,
) -> Tensor:
    """:func:`radius_graph` without the checks of ``x`` and ``batch`` (the caller's
    obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _graph(x, r, batch, loop, max_num_neighbors, flow, backend, trusted=True)


def _graph(x, r, batch, loop, max_num_neighbors, flow, backend, trusted: bool) -> Tensor:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
    r = check_radius(r)
    k = check_count(max_num_neighbors, "max_num_neighbors")
    cx, _ = check_pair(x, x, batch, batch, names=("x", "x"), trusted=trusted)
    x = measured(x)
    if loop:
        edge = radius_edges(x, x, cx, cx, r, k, backend, "radius_graph")
    else:
        edge = radius_edges(x, x, cx, cx, r, k + 1, backend, "radius_graph")
        edge = edge[:, edge[0] != edge[1]]
        edge = truncate(edge[0], edge[1], x.size(0), k)
    return edge.flip(0) if flow == "source_to_target" else edge
