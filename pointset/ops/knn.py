"""k-nearest neighbours: ``knn`` / ``knn_graph`` (packed PyG layout) and ``knn_dense``.

Every backend returns, per query, its ``k`` nearest points of the same cloud in ascending
squared Euclidean distance, ties to the lower index. Distances are those of a plain loop:
direct differences accumulated coordinate by coordinate in the input dtype - float32 for
float16 / bfloat16 points, on every backend (see :func:`pointset._checks.measured`).

Coordinates so large or so small that their squared distances would overflow or underflow
the dtype (float32: largest magnitude above 2^60 ~ 1.2e18 or below 2^-58 ~ 3.5e-18) are
rescaled by a power of two first, which is exact; the search then ranks the exact
distances, and ``knn_dense`` returns them scaled back (inf or 0 where the true value lies
outside the dtype's range).

Backends (``backend=`` or :func:`~pointset.ops.use_backend`):

* ``"native"`` - chunked brute force in PyTorch, any device; direct differences, never the
  expanded ``|x|^2 - 2 x.y + |y|^2`` form, so it is exact (see ``pointset.ops._native_knn``).
* ``"numba"`` - CPU, 2-D/3-D: cell-grid search compiled with numba; computes the exact
  distances itself (``pointset.ops._numba_kernels``).
* ``"scipy"`` - ``cKDTree`` per cloud (CPU); several clouds are searched side by side on a
  thread pool (the queries release the GIL), a lone large cloud with ``workers=-1``.
* ``"open3d"`` - ``open3d.core.nns.NearestNeighborSearch.knn_search`` per cloud (CPU).
* ``"torch_cluster"`` - ``torch_cluster.knn`` (CPU kd-tree, CUDA kernel). The glue drops
  empty clouds from the batch, refuses ``k > 100`` on CUDA and raises on a ``-1`` answer.
* ``"pytorch3d"`` - ``pytorch3d.ops.knn_points`` when importable.
* ``"triton"`` - CUDA (CPU only under ``TRITON_INTERPRET=1``): exact selection kernels,
  the native formula bit for bit (``pointset.ops._triton_kernels``).

The libraries find the candidates (in float64, or breaking ties their own way); pointset
then puts them in (distance, index) order under the formula above. ``knn_dense`` recomputes
every returned distance; ``knn`` / ``knn_graph`` keep the library's order and re-measure only
the queries where two neighbours lie within rounding of each other. Distances therefore
equal the plain loop's, and indices differ only where an exact tie straddles the k-th
place. A graph without self loops asks for ``k + 1`` candidates and drops the query itself
(or, among duplicates, the farthest candidate).

Automatic choice (:func:`auto`), measured with ``benchmarks/ops.py`` on a 2-core AMD EPYC
CPU with torch 2.13 (table in the README):

* CPU, 2-D or 3-D points: ``numba`` (a uniform cell grid per cloud, queries in cell order,
  exact (distance, index) selection, parallel over queries), then ``open3d``, ``scipy``,
  ``native``. It was the fastest measured from many small clouds to one cloud of 200,000.
* CPU, other dimensions (where grids degrade): ``open3d``, ``scipy``, then ``native``.
* Other devices: ``triton`` (exact kernels, any ``k``), ``pytorch3d``, then ``native``.
  ``torch_cluster`` is not chosen automatically there: its CUDA kernel asserts ``k <= 100``
  and returns ``-1`` for neighbours more than 1e5 away; ``backend="torch_cluster"`` still
  reaches it (its glue then checks the answer, see :func:`_knn_torch_cluster`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import check_points, check_same_dim, distance_rescale, measured
from ._backend import select
from ._clouds import Clouds
from ._native_knn import knn_padded


@dataclass
class _Search:
    """One validated kNN problem: for every row of ``y`` (clouds ``cy``), its ``k`` nearest
    rows of ``x`` (clouds ``cx``) in the same cloud. ``cx`` and ``cy`` hold the same number
    of clouds; without self loops ``x is y`` and each query's own row is left out."""

    x: Tensor
    y: Tensor
    cx: Clouds
    cy: Clouds
    k: int
    exclude_self: bool
    need_dist: bool = True

    @property
    def wanted(self) -> int:
        """Candidates to ask a library for: one more when the query's own point is dropped."""
        return self.k + 1 if self.exclude_self else self.k

    def query_start(self) -> Tensor:
        """``[M]`` long: the first row of ``x`` in each query's cloud."""
        return self.cx.ptr[:-1][self.cy.batch]


def _check_k(k: int, x_counts: list[int], y_counts: list[int], self_loops: bool = True) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    extra = 0 if self_loops else 1
    for b, (n, m) in enumerate(zip(x_counts, y_counts)):
        if m > 0 and k + extra > n:
            if self_loops:
                raise ValueError(f"k={k} is larger than cloud {b}, which has {n} points")
            raise ValueError(
                f"k={k} is larger than cloud {b} without self loops, which has {n} points "
                f"({n - 1} neighbours each)"
            )


# ---------------------------------------------------------------------------------------
# Finishing library candidates: exact distances, self removal, (distance, index) order.
# ---------------------------------------------------------------------------------------


def _exact_rows(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Squared distances of candidates ``idx: [Q, k]`` to queries ``y: [Q, D]`` (all rows or
    ``rows``), by the plain formula in the input dtype."""
    if rows is not None:
        idx, y = idx[rows], y[rows]
    coords = x.T  # [D, N]; gathering one coordinate at a time keeps the arrays contiguous
    dist = np.take(coords[0], idx)
    dist -= y[:, 0, None]
    dist *= dist
    for c in range(1, x.shape[1]):
        diff = np.take(coords[c], idx)
        diff -= y[:, c, None]
        diff *= diff
        dist += diff
    return dist


def _sort_rows(dist: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """Order ``rows`` of ``dist`` / ``idx`` (in place) by (distance, index)."""
    order = np.lexsort((idx[rows], dist[rows]), axis=-1)
    idx[rows] = np.take_along_axis(idx[rows], order, axis=1)
    dist[rows] = np.take_along_axis(dist[rows], order, axis=1)


def _finish_numpy(
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    k: int,
    own: np.ndarray | None,
    found: np.ndarray | None = None,
    need_dist: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Candidates ``idx: [Q, k']`` (rows of ``x``) of queries ``y: [Q, D]`` -> k exact ones.

    ``own`` holds each query's own row in ``x`` when it must be dropped. ``found`` are the
    library's ascending distances (Euclidean or squared, any precision). Without
    ``need_dist`` they settle the order, and only rows where two neighbours lie within
    rounding of each other are re-measured exactly and re-ordered by (distance, index).
    """
    near_ties = None
    if found is not None and not need_dist:
        # Rows where two candidates lie within rounding of each other (scaled by the row's
        # largest distance, conservatively) are the only ones whose order needs checking.
        tol = 64 * np.finfo(x.dtype).eps
        gap = found[:, 1:] - found[:, :-1]
        near_ties = np.flatnonzero((gap <= tol * found[:, -1:]).any(1))
    if own is not None:
        if bool((idx[:, 0] == own).all()):  # the usual case: each query first, at distance 0
            idx = idx[:, 1:]
            if near_ties is None:
                idx = np.ascontiguousarray(idx)  # np.take is slow on strided indices
        else:
            drop = idx == own[:, None]
            drop[~drop.any(1), -1] = True
            idx = idx[~drop].reshape(idx.shape[0], k)
    if near_ties is not None:
        if near_ties.size:
            dist = _exact_rows(x, y, idx, near_ties)
            part = idx[near_ties]
            order = np.lexsort((part, dist), axis=-1)
            idx[near_ties] = np.take_along_axis(part, order, axis=1)
        return None, idx
    dist = _exact_rows(x, y, idx)
    step_d = dist[:, 1:]
    prev_d = dist[:, :-1]
    rows = np.flatnonzero((step_d <= prev_d).any(1))
    if rows.size:
        _sort_rows(dist, idx, rows)
    return dist, idx


def _finish_torch(
    x: Tensor, y: Tensor, idx: Tensor, k: int, own: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:func:`_finish_numpy` in PyTorch, for candidates on other devices."""
    if own is not None:
        drop = idx == own.unsqueeze(1)
        drop[:, -1] |= ~drop.any(1)
        idx = idx[~drop].view(idx.size(0), k)
    idx = idx.sort(dim=1).values
    near = x[idx]
    diff = near - y.unsqueeze(1)
    dist = diff[..., 0].square()
    for c in range(1, x.size(1)):
        dist = dist + diff[..., c].square()
    dist, order = dist.sort(dim=1, stable=True)
    return dist, idx.gather(1, order)


def _numpy_job(job: _Search):
    """NumPy views ``(x, y)`` of a search."""
    return job.x.detach().numpy(), job.y.detach().numpy()


def _finish_job_numpy(job: _Search, idx: np.ndarray, found: np.ndarray | None = None):
    """:func:`_finish_numpy` for a search's candidates ``idx: [M, k']`` (rows of ``job.x``)."""
    xa, ya = _numpy_job(job)
    own = np.arange(ya.shape[0], dtype=np.int64) if job.exclude_self else None
    return _finish_numpy(xa, ya, idx, job.k, own, found, job.need_dist)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """A thread pool for per-cloud searches, recreated in a forked child process."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
    return _POOL[1]


def _per_cloud(job: _Search, search, threads: bool = False):
    """Run ``search(points, queries, k, workers) -> (dist, local idx)`` (NumPy) cloud by
    cloud, then finish the candidates.

    With ``threads`` (for searches that release the GIL) several clouds run at once, each
    single-threaded; a lone cloud uses the library's own threads instead.
    """
    xa, ya = _numpy_job(job)
    wanted = job.wanted
    total = ya.shape[0]
    if job.cx.num_clouds == 1:
        # One cloud: use the library's arrays as they are.
        dist, local = search(xa, ya, wanted, -1 if total * wanted >= 16_384 else 1)
        idx = np.asarray(local, dtype=np.int64).reshape(total, wanted)
        return _finish_job_numpy(job, idx, np.asarray(dist).reshape(total, wanted))
    idx = np.empty((total, wanted), dtype=np.int64)
    found = np.empty((total, wanted), dtype=np.float64 if threads else xa.dtype)
    tasks = [
        (xs, n, ys, m)
        for xs, n, ys, m in zip(
            job.cx.ptr_list, job.cx.counts_list, job.cy.ptr_list, job.cy.counts_list
        )
        if m > 0
    ]

    def run(task, workers):
        xs, n, ys, m = task
        dist, local = search(xa[xs : xs + n], ya[ys : ys + m], wanted, workers)
        np.add(np.asarray(local).reshape(m, wanted), xs, out=idx[ys : ys + m])
        found[ys : ys + m] = np.asarray(dist).reshape(m, wanted)

    if threads and len(tasks) > 1:
        list(_pool().map(lambda task: run(task, 1), tasks))  # re-raises a task's error
    else:
        for task in tasks:
            # The library's own threads pay off from a few thousand queries on.
            run(task, -1 if task[3] * wanted >= 16_384 else 1)
    return _finish_job_numpy(job, idx, found)


# ---------------------------------------------------------------------------------------
# Backends: search -> (dist2 [M, k], idx [M, k]) for every query (row of job.y), idx
# indexing job.x; NumPy arrays (CPU libraries) or tensors.
# ---------------------------------------------------------------------------------------


def _knn_native(job: _Search):
    cx, cy = job.cx, job.cy
    xp = cx.to_padded(job.x)
    yp = xp if job.y is job.x and cy is cx else cy.to_padded(job.y)
    lengths = None if cx.uniform else cx.counts
    dist, idx = knn_padded(xp, yp, job.k, lengths, job.exclude_self)
    idx = idx + cx.ptr[:-1].view(-1, 1, 1)
    return cy.unpad(dist), cy.unpad(idx)


def _scipy_search(points: np.ndarray, queries: np.ndarray, k: int, workers: int):
    from scipy.spatial import cKDTree

    return cKDTree(points).query(queries, k, workers=workers)


def _open3d_search(points: np.ndarray, queries: np.ndarray, k: int, workers: int):
    """open3d's kNN (it picks its own thread count, so ``workers`` is not used)."""
    import open3d as o3d

    data = o3d.core.Tensor(np.ascontiguousarray(points))
    index = o3d.core.nns.NearestNeighborSearch(data)
    index.knn_index()
    same = (
        queries.__array_interface__["data"][0] == points.__array_interface__["data"][0]
        and queries.shape == points.shape
        and queries.strides == points.strides
    )
    idx, dist = index.knn_search(
        data if same else o3d.core.Tensor(np.ascontiguousarray(queries)), k
    )
    return dist.numpy(), idx.numpy()


def _knn_scipy(job: _Search):
    return _per_cloud(job, _scipy_search, threads=True)


def _knn_open3d(job: _Search):
    return _per_cloud(job, _open3d_search)


def _knn_numba(job: _Search):
    from ._numba_kernels import knn_grid

    xa, ya = _numpy_job(job)
    if xa.shape[1] not in (2, 3):
        raise ValueError(f"backend 'numba' searches 2-D or 3-D points, got {xa.shape[1]}-D")
    own = np.arange(ya.shape[0], dtype=np.int64) if job.exclude_self else None
    cx = job.cx
    return knn_grid(xa, cx.ptr_np[:-1], cx.counts_np, ya, job.cy.batch_np, own, job.k)


#: Largest ``k`` torch-cluster's CUDA kNN kernel accepts (it asserts ``k <= 100``).
TORCH_CLUSTER_CUDA_MAX_K = 100


def check_torch_cluster_k(device: torch.device, wanted: int) -> None:
    """Refuse what torch-cluster's CUDA kNN cannot do: more than 100 neighbours."""
    if device.type == "cuda" and wanted > TORCH_CLUSTER_CUDA_MAX_K:
        raise ValueError(
            f"backend 'torch_cluster' finds at most {TORCH_CLUSTER_CUDA_MAX_K} neighbours on "
            f"CUDA, got k={wanted} (with the self point); use backend='triton' or 'native'"
        )


def _knn_torch_cluster(job: _Search):
    """torch-cluster's kNN with exact glue: empty clouds are dropped from the batch before
    the call (its CUDA kernel fails on an empty cloud in the middle of a batch), ``k`` is
    checked against the CUDA limit, and a ``-1`` neighbour (its CUDA kernel's answer for a
    neighbour more than 1e5 away) raises instead of becoming an index of another cloud.
    The candidates are then put in (distance, index) order by pointset's formula."""
    import torch_cluster

    device = job.x.device
    check_torch_cluster_k(device, job.wanted)
    # Renumber the clouds that hold points; queries only lie in those (k was checked).
    used = job.cx.counts_np > 0
    renumber = torch.from_numpy(np.cumsum(used) - 1).to(device)
    bx = renumber[job.cx.batch]
    by = renumber[job.cy.batch]
    num_used = int(used.sum())
    row, col = torch_cluster.knn(job.x, job.y, job.wanted, bx, by, batch_size=num_used)
    if row.numel() != job.y.size(0) * job.wanted or bool((col < 0).any()):
        raise RuntimeError(
            "torch_cluster.knn returned missing neighbours (col = -1): its CUDA kernel "
            "cannot see points more than 1e5 away; use backend='triton' or 'native'"
        )
    # Every query has exactly `wanted` candidates (k was checked), grouped by query.
    idx = col.view(-1, job.wanted)
    if device.type == "cpu":
        return _finish_job_numpy(job, idx.numpy())
    return _finish_torch(job.x, job.y, idx, job.k, _own_rows(job))


def _own_rows(job: _Search) -> Tensor | None:
    """Each query's own row of ``x`` when it must be left out (``x is y``), else ``None``."""
    if not job.exclude_self:
        return None
    return torch.arange(job.y.size(0), device=job.y.device)


#: Extra candidates asked from pytorch3d when it searches a float64 job in float32.
_P3D_EXTRA = 8


def _knn_pytorch3d(job: _Search):
    """pytorch3d's ``knn_points``. Its CPU kernel takes float32 only: a float64 job is
    searched in float32 for a few extra candidates, which are then ranked in float64; a
    query whose float64 k-th distance is not clear of the float32 search radius by the
    rounding bound falls back to the native search (then the answer is exact either way)."""
    from pytorch3d.ops import knn_points

    device = job.x.device
    work = torch.float32
    cx, cy = job.cx, job.cy
    xp, yp = cx.to_padded(job.x), cy.to_padded(job.y)
    searched = [n for n, m in zip(cx.counts_list, cy.counts_list) if m > 0] or [job.wanted]
    extra = 0 if job.x.dtype == work else _P3D_EXTRA
    wanted = min(job.wanted + extra, min(searched))
    found, idx, _ = knn_points(
        yp.to(work),
        xp.to(work),
        lengths1=cy.counts,
        lengths2=cx.counts,
        K=wanted,
        return_sorted=True,
    )
    idx = idx.clamp_min(0) + cx.ptr[:-1].view(-1, 1, 1)
    idx, found = cy.unpad(idx), cy.unpad(found)
    if wanted > job.wanted:
        idx = _closest_candidates(job, idx, found)
        if idx is None:
            return _knn_native(job)
    if device.type == "cpu":
        return _finish_job_numpy(job, idx.numpy())
    return _finish_torch(job.x, job.y, idx, job.k, _own_rows(job))


def _knn_triton(job: _Search):
    from ._triton_launch import knn_search

    start = job.query_start()
    # Without self loops x is y (same clouds), so a query's own point is its own row.
    own = _own_rows(job)
    dist, idx = knn_search(
        job.x, job.y, job.cx, job.cy, job.k, own=None if own is None else own - start
    )
    return dist.to(job.x.dtype), idx + start.unsqueeze(1)


def _closest_candidates(job: _Search, idx: Tensor, found: Tensor) -> Tensor | None:
    """The ``job.wanted`` best of float32 candidates ``idx: [M, K]`` (float32 squared
    distances ``found: [M, K]``, ascending) ranked in the job's dtype, or ``None`` when a
    point outside the candidates could still be closer than the last one kept."""
    y = job.y
    diff = job.x[idx] - y.unsqueeze(1)
    dist = diff[..., 0].square()
    for c in range(1, job.x.size(1)):
        dist = dist + diff[..., c].square()
    order = torch.argsort(idx, dim=1)  # (distance, index) order via a stable sort
    idx, dist = idx.gather(1, order), dist.gather(1, order)
    dist, order = dist.sort(dim=1, stable=True)
    idx = idx.gather(1, order)[:, : job.wanted]
    # Rounding coordinates to float32 moves a pair's distance by at most
    # 2 sqrt(D) |coords|max eps, and float32 arithmetic adds (D + 2) eps relative.
    eps = torch.finfo(torch.float32).eps
    dim = job.x.size(1)
    scale = float(torch.cat([job.x.abs().max().view(1), y.abs().max().view(1)]).max())
    reach = found[:, -1].to(dist.dtype).clamp_min(0).sqrt()
    err = 2 * (2 * dim**0.5 * scale + (dim + 2) * reach) * eps
    kth = dist[:, job.wanted - 1].sqrt()
    # every point of the query's cloud is a candidate
    exhausted = job.cx.counts[job.cy.batch] <= found.size(1)
    if bool((exhausted | (kth + err < reach)).all()):
        return idx
    return None


_IMPLS = {
    "native": _knn_native,
    "triton": _knn_triton,
    "numba": _knn_numba,
    "scipy": _knn_scipy,
    "torch_cluster": _knn_torch_cluster,
    "open3d": _knn_open3d,
    "pytorch3d": _knn_pytorch3d,
}


def auto(device: torch.device, dim: int = 3) -> tuple[str, ...]:
    """Backends to try for kNN, fastest first (the rule is in the module docstring)."""
    if device.type != "cpu":
        return ("triton", "pytorch3d", "native")
    if dim in (2, 3):
        return ("numba", "open3d", "scipy", "native")
    return ("open3d", "scipy", "native")


def _run(job: _Search, backend: str | None):
    device = job.x.device
    _, impl = select("knn", _IMPLS, device, backend, lambda: auto(device, job.x.size(1)))
    return impl(job)


def _packed(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None,
    batch_y: Tensor | None,
    exclude_self: bool,
    backend: str | None,
    neighbours_first: bool = False,
    trusted: bool = False,
) -> Tensor:
    """Shared body of :func:`knn` and :func:`knn_graph` on checked points: ``[2, M*k]``
    (query, neighbour), or (neighbour, query) with ``neighbours_first``. The batch vectors
    are checked unless ``trusted``."""
    device = x.device
    cx = Clouds.from_batch(batch_x, x.size(0), device, "batch_x", trusted=trusted)
    cy = (
        cx
        if batch_y is batch_x and y is x
        else Clouds.from_batch(batch_y, y.size(0), device, "batch_y", trusted=trusted)
    )
    # One cloud on one side (no batch vector) means cloud 0 there.
    cx = cx.with_num_clouds(cy.num_clouds)
    cy = cy.with_num_clouds(cx.num_clouds)
    _check_k(k, cx.counts_list, cy.counts_list, self_loops=not exclude_self)
    same = x is y
    scale = distance_rescale(x, y)
    # Indices only come out: search detached inputs (no gradient to keep).
    x = x.detach() * scale if scale != 1.0 else x.detach()
    y = x if same else (y.detach() * scale if scale != 1.0 else y.detach())
    job = _Search(x, y, cx, cy, k, exclude_self, need_dist=False)
    _, idx = _run(job, backend)
    if isinstance(idx, np.ndarray):
        out = np.empty((2, y.size(0), k), dtype=np.int64)
        first, second = (0, 1) if neighbours_first else (1, 0)
        out[first] = idx
        out[second] = np.arange(y.size(0), dtype=np.int64)[:, None]
        return torch.from_numpy(out.reshape(2, -1))
    row = torch.arange(y.size(0), device=y.device).repeat_interleave(k)
    pair = (idx.reshape(-1), row) if neighbours_first else (row, idx.reshape(-1))
    return torch.stack(pair)


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """For every point of ``y``, its ``k`` nearest points of ``x`` in the same cloud.

    Args:
        x: ``[N, D]`` points searched.
        y: ``[M, D]`` query points.
        k: neighbours per query; larger than a cloud of ``x`` raises ``ValueError``.
        batch_x: ``[N]`` sorted cloud index of each ``x`` point, or ``None``.
        batch_y: ``[M]`` sorted cloud index of each ``y`` point, or ``None``.
        backend: force a backend (``"native"``, ``"scipy"``, ``"torch_cluster"``,
            ``"open3d"``, ``"pytorch3d"``); default: automatic choice.

    Returns:
        ``[2, M * k]`` long: row 0 indexes ``y``, row 1 indexes ``x``; the ``k`` entries of
        a query are consecutive, in ascending distance, ties to the lower ``x`` index.

    Example::

        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
        >>> knn(x, torch.tensor([[0.9, 0.0]]), k=2)
        tensor([[0, 0],
                [1, 0]])
    """
    check_points(x, "x")
    check_points(y, "y")
    check_same_dim(x, y, "x", "y")
    if x.dtype != y.dtype:
        raise ValueError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    return _packed(measured(x), measured(y), k, batch_x, batch_y, False, backend)


def knn_prechecked(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """:func:`knn` without the checks of ``x``, ``y``, ``batch_x`` and ``batch_y`` (the
    caller's obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _packed(measured(x), measured(y), k, batch_x, batch_y, False, backend, trusted=True)


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    backend: str | None = None,
) -> Tensor:
    """The k-nearest-neighbour graph of a point set.

    Args:
        x: ``[N, D]`` points.
        k: neighbours per point (itself excluded unless ``loop``).
        batch: ``[N]`` sorted cloud index of each point, or ``None``.
        loop: count every point as its own neighbour (distance 0).
        flow: ``"source_to_target"`` (row 0 holds the neighbours, row 1 the centers, as
            message passing expects) or ``"target_to_source"`` (the reverse).
        backend: force a backend, as in :func:`knn`.

    Returns:
        ``[2, N * k]`` long edge index; each center's ``k`` edges are consecutive, in
        ascending distance, ties to the lower index. Without ``loop`` a point is never its
        own neighbour, even among duplicates (torch-cluster may then keep ``k + 1``).

    Example::

        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn_graph(x, k=1)
        tensor([[1, 0, 1],
                [0, 1, 2]])
    """
    check_points(x, "x")
    return _graph(x, k, batch, loop, flow, backend, trusted=False)


def knn_graph_prechecked(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    backend: str | None = None,
) -> Tensor:
    """:func:`knn_graph` without the checks of ``x`` and ``batch`` (the caller's
    obligations are listed in :mod:`pointset.ops.prechecked`)."""
    return _graph(x, k, batch, loop, flow, backend, trusted=True)


def _graph(x, k, batch, loop, flow, backend, trusted: bool) -> Tensor:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
    x = measured(x)
    neighbours_first = flow == "source_to_target"
    return _packed(x, x, k, batch, batch, not loop, backend, neighbours_first, trusted)


def knn_dense(
    x: Tensor,
    y: Tensor,
    k: int,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """kNN on padded clouds (pytorch3d-like layout).

    Args:
        x: ``[B, N, D]`` points searched; cloud ``b`` is ``x[b, :x_lengths[b]]``.
        y: ``[B, M, D]`` queries; cloud ``b`` is ``y[b, :y_lengths[b]]``.
        k: neighbours per query; larger than a cloud of ``x`` raises ``ValueError``.
        x_lengths, y_lengths: ``[B]`` valid counts, or ``None`` when all are valid.
        backend: force a backend, as in :func:`knn`.

    Returns:
        ``(dist2 [B, M, k], idx [B, M, k])``: squared distances ascending, indices into the
        second dimension of ``x``, ties to the lower index. Padded query rows hold zeros.
        When ``x`` or ``y`` requires grad, ``dist2`` carries the gradient of
        ``|y_i - x_j|^2`` for the neighbours found (the search itself is not
        differentiable).

    Example::

        >>> x = torch.tensor([[[0.0], [1.0], [3.0]]])
        >>> knn_dense(x, torch.tensor([[[0.9]]]), k=2)[1]
        tensor([[[1, 0]]])
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape [B, N, D], got {shape}")
    if x.size(0) != y.size(0):
        raise ValueError(
            f"x and y must hold the same number of clouds, got {x.size(0)} and {y.size(0)}"
        )
    if x.size(2) != y.size(2) or x.device != y.device:
        check_same_dim(x[0], y[0], "x", "y")
    if x.dtype != y.dtype:
        raise ValueError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    num_clouds, size, _ = x.shape
    queries = y.size(1)
    in_dtype = x.dtype
    x, y = measured(x), measured(y)
    cx = Clouds.from_lengths(x_lengths, num_clouds, size, x.device, "x_lengths")
    cy = Clouds.from_lengths(y_lengths, num_clouds, queries, x.device, "y_lengths")
    x, xs = _checked_padded(x, cx, "x")
    y, ys = _checked_padded(y, cy, "y")
    _check_k(k, cx.counts_list, cy.counts_list)
    scale = distance_rescale(xs, ys)
    xs, ys = xs.detach(), ys.detach()
    if scale != 1.0:
        xs, ys = xs * scale, ys * scale
    dist, idx = _run(_Search(xs, ys, cx, cy, k, False), backend)
    if isinstance(idx, np.ndarray):
        dist, idx = torch.from_numpy(dist), torch.from_numpy(idx)
    idx = idx - cx.ptr[:-1][cy.batch].unsqueeze(1).to(idx.device)  # local indices
    dist = cy.to_padded(dist, width=queries)
    idx = cy.to_padded(idx, width=queries)
    if scale != 1.0:
        dist = (dist.double() / scale**2).to(dist.dtype)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        dist = _differentiable_dist2(dist, idx, x, y, cy)
    return dist.to(in_dtype), idx


def _differentiable_dist2(dist: Tensor, idx: Tensor, x: Tensor, y: Tensor, cy: Clouds) -> Tensor:
    """``dist [B, M, k]`` with the gradient of ``|y_i - x_idx|^2`` w.r.t. ``x`` and ``y``
    (the values stay the searched ones; padded query rows get no gradient)."""
    num_clouds, queries, k = idx.shape
    gathered = x.gather(1, idx.reshape(num_clouds, -1, 1).expand(-1, -1, x.size(2)))
    diff = gathered.view(num_clouds, queries, k, -1) - y.unsqueeze(2)
    exact = diff.pow(2).sum(-1)
    exact = exact * cy.valid_mask(queries).unsqueeze(2).to(exact.dtype)
    return dist.to(exact.dtype) + (exact - exact.detach())


def _checked_padded(t: Tensor, clouds: Clouds, name: str) -> tuple[Tensor, Tensor]:
    """Check the valid rows of a padded ``t: [B, W, D]``. Returns ``(t with zero padding,
    its valid rows packed [N, D])``."""
    packed = clouds.unpad(t)
    check_points(packed, name, allow_empty=True)
    if clouds.uniform and clouds.max_count == t.size(1):
        return t, packed
    return t.masked_fill(~clouds.valid_mask(t.size(1)).unsqueeze(2), 0), packed
