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
from ._native_knn import knn_padded
from ._native_layout import cloud_counts, to_padded, valid_mask


@dataclass
class _Job:
    """One validated kNN problem on flat point tensors.

    Cloud ``b`` has points ``x[x_start[b] : x_start[b] + x_count[b]]`` and queries
    ``y[y_start[b] : y_start[b] + y_count[b]]``. ``x_pad`` / ``y_pad`` are set when the
    input already is padded ``[B, N, D]`` (then ``x_start[b] = b * N``).
    """

    x: Tensor
    y: Tensor
    x_start: list[int]
    x_count: list[int]
    y_start: list[int]
    y_count: list[int]
    k: int
    exclude_self: bool
    x_pad: Tensor | None = None
    y_pad: Tensor | None = None
    need_dist: bool = True

    @property
    def wanted(self) -> int:
        """Candidates to ask a library for: one more when the query's own point is dropped."""
        return self.k + 1 if self.exclude_self else self.k

    def query_index(self) -> np.ndarray:
        """Rows of ``y`` that are real queries, in cloud order."""
        if self.y_pad is None:
            return np.arange(sum(self.y_count), dtype=np.int64)
        size = self.y_pad.size(1)
        return np.concatenate(
            [np.arange(b * size, b * size + m, dtype=np.int64) for b, m in enumerate(self.y_count)]
        )


def _starts(counts: list[int]) -> list[int]:
    out, total = [], 0
    for n in counts:
        out.append(total)
        total += n
    return out


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


def _numpy_job(job: _Job):
    """NumPy views ``(x, y)`` of a job and its query rows."""
    return job.x.detach().numpy(), job.y.detach().numpy(), job.query_index()


def _finish_job_numpy(job: _Job, idx: np.ndarray, found: np.ndarray | None = None):
    """:func:`_finish_numpy` for a job's candidates ``idx: [Q, k']`` (rows of ``job.x``)."""
    xa, ya, rows = _numpy_job(job)
    yq = ya if rows.size == ya.shape[0] else ya[rows]
    own = rows if job.exclude_self else None
    return _finish_numpy(xa, yq, idx, job.k, own, found, job.need_dist)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """A thread pool for per-cloud searches, recreated in a forked child process."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
    return _POOL[1]


def _per_cloud(job: _Job, search, threads: bool = False):
    """Run ``search(points, queries, k, workers) -> (dist, local idx)`` (NumPy) cloud by
    cloud, then finish the candidates.

    With ``threads`` (for searches that release the GIL) several clouds run at once, each
    single-threaded; a lone cloud uses the library's own threads instead.
    """
    xa, ya, _ = _numpy_job(job)
    wanted = job.wanted
    total = sum(job.y_count)
    if job.x_count == [xa.shape[0]] and job.y_count == [ya.shape[0]]:
        # One cloud without padding: use the library's arrays as they are.
        dist, local = search(xa, ya, wanted, -1 if total * wanted >= 16_384 else 1)
        idx = np.asarray(local, dtype=np.int64).reshape(total, wanted)
        return _finish_job_numpy(job, idx, np.asarray(dist).reshape(total, wanted))
    idx = np.empty((total, wanted), dtype=np.int64)
    found = np.empty((total, wanted), dtype=np.float64 if threads else xa.dtype)
    tasks = []
    q0 = 0
    for xs, n, ys, m in zip(job.x_start, job.x_count, job.y_start, job.y_count):
        if m > 0:
            tasks.append((xs, n, ys, m, q0))
            q0 += m

    def run(task, workers):
        xs, n, ys, m, q = task
        dist, local = search(xa[xs : xs + n], ya[ys : ys + m], wanted, workers)
        np.add(np.asarray(local).reshape(m, wanted), xs, out=idx[q : q + m])
        found[q : q + m] = np.asarray(dist).reshape(m, wanted)

    if threads and len(tasks) > 1:
        list(_pool().map(lambda task: run(task, 1), tasks))  # re-raises a task's error
    else:
        for task in tasks:
            # The library's own threads pay off from a few thousand queries on.
            run(task, -1 if task[3] * wanted >= 16_384 else 1)
    return _finish_job_numpy(job, idx, found)


# ---------------------------------------------------------------------------------------
# Backends: job -> (dist2 [Q, k], idx [Q, k]) for the real queries in cloud order, idx
# indexing job.x; NumPy arrays (CPU libraries) or tensors.
# ---------------------------------------------------------------------------------------


def _knn_native(job: _Job):
    num_clouds = len(job.x_count)
    if job.x_pad is not None:
        xp, yp = job.x_pad, job.y_pad
    else:
        xc = torch.tensor(job.x_count, device=job.x.device)
        yc = torch.tensor(job.y_count, device=job.y.device)
        xp = _padded(job.x, xc, job.x_count)
        same = job.y is job.x and job.y_count == job.x_count
        yp = xp if same else _padded(job.y, yc, job.y_count)
    size = xp.size(1)
    lengths = None
    if any(n != size for n in job.x_count):
        lengths = torch.tensor(job.x_count, device=xp.device)
    dist, idx = knn_padded(xp, yp, job.k, lengths, job.exclude_self)
    idx = idx + torch.tensor(job.x_start, device=idx.device).view(num_clouds, 1, 1)
    if any(m != yp.size(1) for m in job.y_count):
        keep = valid_mask(torch.tensor(job.y_count, device=idx.device), yp.size(1))
        return dist[keep], idx[keep]
    return dist.flatten(0, 1), idx.flatten(0, 1)


def _padded(points: Tensor, counts_t: Tensor, counts: list[int]) -> Tensor:
    size = max(counts)
    if all(n == size for n in counts):
        return points.reshape(len(counts), size, points.size(1))
    batch = torch.repeat_interleave(torch.arange(len(counts), device=points.device), counts_t)
    return to_padded(points, batch, counts_t, size)


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


def _knn_scipy(job: _Job):
    return _per_cloud(job, _scipy_search, threads=True)


def _knn_open3d(job: _Job):
    return _per_cloud(job, _open3d_search)


def _knn_numba(job: _Job):
    from ._numba_kernels import knn_grid

    xa, ya, rows = _numpy_job(job)
    if xa.shape[1] not in (2, 3):
        raise ValueError(f"backend 'numba' searches 2-D or 3-D points, got {xa.shape[1]}-D")
    queries = ya if rows.size == ya.shape[0] else ya[rows]
    cloud = np.repeat(np.arange(len(job.y_count), dtype=np.int64), job.y_count)
    own = rows if job.exclude_self else None
    return knn_grid(xa, job.x_start, job.x_count, queries, cloud, own, job.k)


#: Largest ``k`` torch-cluster's CUDA kNN kernel accepts (it asserts ``k <= 100``).
TORCH_CLUSTER_CUDA_MAX_K = 100


def check_torch_cluster_k(device: torch.device, wanted: int) -> None:
    """Refuse what torch-cluster's CUDA kNN cannot do: more than 100 neighbours."""
    if device.type == "cuda" and wanted > TORCH_CLUSTER_CUDA_MAX_K:
        raise ValueError(
            f"backend 'torch_cluster' finds at most {TORCH_CLUSTER_CUDA_MAX_K} neighbours on "
            f"CUDA, got k={wanted} (with the self point); use backend='triton' or 'native'"
        )


def _knn_torch_cluster(job: _Job):
    """torch-cluster's kNN with exact glue: empty clouds are dropped from the batch before
    the call (its CUDA kernel fails on an empty cloud in the middle of a batch), ``k`` is
    checked against the CUDA limit, and a ``-1`` neighbour (its CUDA kernel's answer for a
    neighbour more than 1e5 away) raises instead of becoming an index of another cloud.
    The candidates are then put in (distance, index) order by pointset's formula."""
    import torch_cluster

    device = job.x.device
    check_torch_cluster_k(device, job.wanted)
    used = [b for b, n in enumerate(job.x_count) if n > 0]
    x_count = [job.x_count[b] for b in used]
    y_count = [job.y_count[b] for b in used]
    clouds = torch.arange(len(used), device=device)
    xc = torch.tensor(x_count, device=device)
    yc = torch.tensor(y_count, device=device)
    rows = torch.from_numpy(job.query_index()).to(device)
    x_start = [job.x_start[b] for b in used]
    xs = job.x[_real_rows(x_start, x_count, device)]
    ys = job.y[rows]
    bx = torch.repeat_interleave(clouds, xc)
    by = torch.repeat_interleave(clouds, yc)
    row, col = torch_cluster.knn(xs, ys, job.wanted, bx, by, batch_size=len(used))
    if row.numel() != ys.size(0) * job.wanted or bool((col < 0).any()):
        raise RuntimeError(
            "torch_cluster.knn returned missing neighbours (col = -1): its CUDA kernel "
            "cannot see points more than 1e5 away; use backend='triton' or 'native'"
        )
    # Every query has exactly `wanted` candidates (k was checked), grouped by query.
    col = col + torch.tensor(x_start, device=device)[bx[col]] - _packed_starts(xc)[bx[col]]
    idx = col.view(-1, job.wanted)
    if device.type == "cpu":
        return _finish_job_numpy(job, idx.numpy())
    return _finish_torch(job.x, ys, idx, job.k, rows if job.exclude_self else None)


def _real_rows(starts: list[int], counts: list[int], device) -> Tensor:
    return torch.cat([torch.arange(s, s + n, device=device) for s, n in zip(starts, counts)])


def _packed_starts(counts_t: Tensor) -> Tensor:
    return torch.cumsum(counts_t, 0) - counts_t


#: Extra candidates asked from pytorch3d when it searches a float64 job in float32.
_P3D_EXTRA = 8


def _knn_pytorch3d(job: _Job):
    """pytorch3d's ``knn_points``. Its CPU kernel takes float32 only: a float64 job is
    searched in float32 for a few extra candidates, which are then ranked in float64; a
    query whose float64 k-th distance is not clear of the float32 search radius by the
    rounding bound falls back to the native search (then the answer is exact either way)."""
    from pytorch3d.ops import knn_points

    device = job.x.device
    work = torch.float32
    xc = torch.tensor(job.x_count, device=device)
    yc = torch.tensor(job.y_count, device=device)
    xp = job.x_pad if job.x_pad is not None else _padded(job.x, xc, job.x_count)
    yp = job.y_pad if job.y_pad is not None else _padded(job.y, yc, job.y_count)
    searched = [n for n, m in zip(job.x_count, job.y_count) if m > 0] or [job.wanted]
    extra = 0 if job.x.dtype == work else _P3D_EXTRA
    wanted = min(job.wanted + extra, min(searched))
    found, idx, _ = knn_points(
        yp.to(work), xp.to(work), lengths1=yc, lengths2=xc, K=wanted, return_sorted=True
    )
    idx = idx.clamp_min(0) + torch.tensor(job.x_start, device=device).view(-1, 1, 1)
    keep = valid_mask(yc, yp.size(1))
    idx, found = idx[keep], found[keep]
    if wanted > job.wanted:
        idx = _closest_candidates(job, idx, found)
        if idx is None:
            return _knn_native(job)
    if device.type == "cpu":
        return _finish_job_numpy(job, idx.numpy())
    rows = torch.from_numpy(job.query_index()).to(device)
    return _finish_torch(job.x, job.y[rows], idx, job.k, rows if job.exclude_self else None)


def _knn_triton(job: _Job):
    from ._triton_launch import knn_search

    device = job.x.device
    rows = torch.from_numpy(job.query_index()).to(device)
    per_query = torch.tensor(job.y_count, device=device)
    start = torch.repeat_interleave(torch.tensor(job.x_start, device=device), per_query)
    count = torch.repeat_interleave(torch.tensor(job.x_count, device=device), per_query)
    # Without self loops x is y (same clouds), so a query's own point is row `rows` of x.
    own = rows - start if job.exclude_self else None
    dist, idx = knn_search(job.x, job.y[rows], start, count, job.k, own=own)
    return dist.to(job.x.dtype), idx + start.unsqueeze(1)


def _closest_candidates(job: _Job, idx: Tensor, found: Tensor) -> Tensor | None:
    """The ``job.wanted`` best of float32 candidates ``idx: [Q, K]`` (float32 squared
    distances ``found: [Q, K]``, ascending) ranked in the job's dtype, or ``None`` when a
    point outside the candidates could still be closer than the last one kept."""
    rows = torch.from_numpy(job.query_index()).to(idx.device)
    y = job.y[rows]
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
    counts = torch.tensor(job.x_count, device=idx.device)
    cloud = torch.repeat_interleave(
        torch.arange(len(job.y_count), device=idx.device),
        torch.tensor(job.y_count, device=idx.device),
    )
    exhausted = counts[cloud] <= found.size(1)  # every point of the cloud is a candidate
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


def auto(
    device: torch.device, max_count: int, num_queries: int, k: int, dim: int = 3
) -> tuple[str, ...]:
    """Backends to try for kNN, fastest first (the rule is in the module docstring)."""
    if device.type != "cpu":
        return ("triton", "pytorch3d", "native")
    if dim in (2, 3):
        return ("numba", "open3d", "scipy", "native")
    return ("open3d", "scipy", "native")


def _run(job: _Job, backend: str | None):
    _, impl = select(
        "knn",
        _IMPLS,
        job.x.device,
        backend,
        lambda: auto(job.x.device, max(job.x_count), sum(job.y_count), job.k, job.x.size(1)),
    )
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
) -> Tensor:
    """Shared body of :func:`knn` and :func:`knn_graph`: ``[2, M*k]`` (query, neighbour),
    or (neighbour, query) with ``neighbours_first``."""
    if batch_x is None and batch_y is None:
        x_counts, y_counts = [x.size(0)], [y.size(0)]
    else:
        # One cloud on one side means cloud 0 there.
        batch_x, x_counts = cloud_counts(batch_x, x.size(0), "batch_x")
        batch_y, y_counts = cloud_counts(batch_y, y.size(0), "batch_y")
        size = max(len(x_counts), len(y_counts))
        x_counts += [0] * (size - len(x_counts))
        y_counts += [0] * (size - len(y_counts))
    _check_k(k, x_counts, y_counts, self_loops=not exclude_self)
    same = x is y
    scale = distance_rescale(x, y)
    # Indices only come out: search detached inputs (no gradient to keep).
    x = x.detach() * scale if scale != 1.0 else x.detach()
    y = x if same else (y.detach() * scale if scale != 1.0 else y.detach())
    job = _Job(x, y, _starts(x_counts), x_counts, _starts(y_counts), y_counts, k, exclude_self)
    job.need_dist = False
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
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
    check_points(x, "x")
    x = measured(x)
    return _packed(x, x, k, batch, batch, not loop, backend, flow == "source_to_target")


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
    num_clouds, size, dim = x.shape
    queries = y.size(1)
    in_dtype = x.dtype
    x, y = measured(x), measured(y)
    x_counts = _lengths(x_lengths, num_clouds, size, "x_lengths")
    y_counts = _lengths(y_lengths, num_clouds, queries, "y_lengths")
    x = _checked_padded(x, x_lengths, "x")
    y = _checked_padded(y, y_lengths, "y")
    _check_k(k, x_counts, y_counts)
    scale = distance_rescale(x, y)
    xs, ys = x.detach(), y.detach()
    if scale != 1.0:
        xs, ys = xs * scale, ys * scale
    dist, idx = _dense_search(xs, ys, k, x_counts, y_counts, backend)
    if scale != 1.0:
        dist = (dist.double() / scale**2).to(dist.dtype)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        dist = _differentiable_dist2(dist, idx, x, y, y_counts)
    return dist.to(in_dtype), idx


def _differentiable_dist2(
    dist: Tensor, idx: Tensor, x: Tensor, y: Tensor, y_counts: list[int]
) -> Tensor:
    """``dist [B, M, k]`` with the gradient of ``|y_i - x_idx|^2`` w.r.t. ``x`` and ``y``
    (the values stay the searched ones; padded query rows get no gradient)."""
    num_clouds, queries, k = idx.shape
    gathered = x.gather(1, idx.reshape(num_clouds, -1, 1).expand(-1, -1, x.size(2)))
    diff = gathered.view(num_clouds, queries, k, -1) - y.unsqueeze(2)
    exact = diff.pow(2).sum(-1)
    valid = torch.arange(queries, device=idx.device) < torch.tensor(
        y_counts, device=idx.device
    ).unsqueeze(1)
    exact = exact * valid.unsqueeze(2).to(exact.dtype)
    return dist.to(exact.dtype) + (exact - exact.detach())


def _dense_search(
    x: Tensor,
    y: Tensor,
    k: int,
    x_counts: list[int],
    y_counts: list[int],
    backend: str | None,
) -> tuple[Tensor, Tensor]:
    """The search of :func:`knn_dense` on checked, detached input."""
    num_clouds, size, dim = x.shape
    queries = y.size(1)
    job = _Job(
        x.reshape(-1, dim),
        y.reshape(-1, dim),
        [b * size for b in range(num_clouds)],
        x_counts,
        [b * queries for b in range(num_clouds)],
        y_counts,
        k,
        False,
        x,
        y,
    )
    dist, idx = _run(job, backend)
    offsets = np.repeat(np.arange(num_clouds, dtype=np.int64) * size, y_counts)
    if isinstance(idx, np.ndarray):
        idx = idx - offsets[:, None]
        if all(m == queries for m in y_counts):
            return (
                torch.from_numpy(dist.reshape(num_clouds, queries, k)),
                torch.from_numpy(idx.reshape(num_clouds, queries, k)),
            )
        dist_out = np.zeros((num_clouds * queries, k), dtype=dist.dtype)
        idx_out = np.zeros((num_clouds * queries, k), dtype=np.int64)
        rows = job.query_index()
        dist_out[rows] = dist
        idx_out[rows] = idx
        return (
            torch.from_numpy(dist_out.reshape(num_clouds, queries, k)),
            torch.from_numpy(idx_out.reshape(num_clouds, queries, k)),
        )
    idx = idx - torch.from_numpy(offsets).to(idx.device).unsqueeze(1)
    if all(m == queries for m in y_counts):
        return dist.view(num_clouds, queries, k), idx.view(num_clouds, queries, k)
    rows = torch.from_numpy(job.query_index()).to(idx.device)
    dist_out = dist.new_zeros(num_clouds * queries, k)
    idx_out = idx.new_zeros(num_clouds * queries, k)
    dist_out[rows] = dist
    idx_out[rows] = idx
    return dist_out.view(num_clouds, queries, k), idx_out.view(num_clouds, queries, k)


def _lengths(lengths: Tensor | None, num_clouds: int, size: int, name: str) -> list[int]:
    if lengths is None:
        return [size] * num_clouds
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.numel() != num_clouds:
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"{name} must have shape [{num_clouds}], got {shape}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    values = lengths.tolist()
    for b, n in enumerate(values):
        if not 0 <= n <= size:
            raise ValueError(f"{name}[{b}]={n} is outside [0, {size}]")
    return values


def _checked_padded(t: Tensor, lengths: Tensor | None, name: str) -> Tensor:
    """Check the valid rows of a padded ``[B, N, D]`` tensor; zero its padding."""
    if lengths is None:
        check_points(t.reshape(-1, t.size(-1)), name, allow_empty=True)
        return t
    valid = valid_mask(lengths.to(t.device), t.size(1))
    check_points(t[valid], name, allow_empty=True)
    return t.masked_fill(~valid.unsqueeze(2), 0)
