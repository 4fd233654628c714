"""AutoFocusFormer neighbourhoods from positions alone (the ops half of the AFF layers).

:func:`cluster_neighbourhood` cuts padded clouds into balanced clusters
(:func:`pointset.ops.balanced_cluster_dense`) and gives every token the members of its
nearest clusters, as the AFF reference does. Its pieces are public for the layers:

* :class:`Neighbourhood` - the result type (index, mask, exclude, reach);
* :func:`knn_lowest_index` - brute-force kNN on float32 square-root distances with ties to
  the lowest index (the reference's KeOps rule); backends ``native`` (PyTorch, any device)
  and ``triton`` (CUDA, or CPU under ``TRITON_INTERPRET=1``), bit-identical;
* :func:`nearest_clusters` - the nearest cluster centers of every token, pruned by the
  triangle inequality and exactly equal to :func:`knn_lowest_index`;
* :func:`pair_distance` / :func:`row_distance` - the float32 distance formula;
* :func:`nearest_other_distance` - distance to the nearest other token of the cloud.

The ``k`` smallest values with ties to the lower index come from the one ``smallest_k``
of the native kNN backend.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .._checks import check_points
from ._backend import select
from ._clouds import Clouds
from ._native_knn import smallest_k
from .balanced_cluster import _check_extent, _check_inside, balanced_cluster_dense_prechecked
from .knn import knn_dense

#: Distances held at once per chunk of queries of :func:`knn_lowest_index` (elements).
CHUNK_ELEMENTS = 1 << 22


def _chunk(total_rows: int, per_row: int) -> int:
    return max(1, min(total_rows, CHUNK_ELEMENTS // max(1, per_row)))


class Neighbourhood(NamedTuple):
    """Attention neighbourhoods of ``B`` padded clouds of ``N`` tokens.

    Attributes:
        index: ``[B, N, M]`` long token indices per query, or ``None`` for global attention
            over all ``N`` tokens of every cloud.
        mask: ``[B, N, M]`` bool, ``False`` for the padding members of a cluster (they stay
            in the softmax with a ``-100`` logit and get zero merging weight, as in the
            reference), or ``None`` when every member is real.
        exclude: ``[B, N, M]`` bool, ``True`` for slots that do not exist for this cloud
            (batch padding of clouds with smaller neighbourhoods); they get exactly zero
            weight. ``None`` when no slot is excluded.
        reach: ``[B, N]`` float32 lower bound on the distance from each query to any token
            of its cloud outside its neighbourhood (``inf`` when it holds the whole cloud),
            or ``None`` when unknown. Lets nearest-token searches stay inside the
            neighbourhood.
    """

    index: Tensor | None
    mask: Tensor | None = None
    exclude: Tensor | None = None
    reach: Tensor | None = None

    def rows(self, select: Tensor) -> Neighbourhood:
        """The neighbourhoods of the queries ``select [B, N']`` (indices into ``N``)."""
        if self.index is None:
            raise ValueError("global neighbourhoods have no per-query rows to select")

        def take(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.gather(1, select.unsqueeze(-1).expand(-1, -1, t.size(-1)))

        reach = None if self.reach is None else self.reach.gather(1, select)
        return Neighbourhood(take(self.index), take(self.mask), take(self.exclude), reach)


def expand_global(nbhd: Neighbourhood, batch: int, num: int, device: torch.device) -> Neighbourhood:
    """Spell out global neighbourhoods (``index=None``) as every token of the cloud."""
    if nbhd.index is not None:
        return nbhd
    index = torch.arange(num, device=device).view(1, 1, num).expand(batch, num, num)
    reach = torch.full((batch, num), float("inf"), device=device)
    return Neighbourhood(index, None, None, reach)


def gather_tokens(values: Tensor, index: Tensor) -> Tensor:
    """``values [B, S, *F]`` gathered at ``index [B, *I]`` -> ``[B, *I, *F]``."""
    batch, size = values.shape[:2]
    flat = values.reshape(batch * size, *values.shape[2:])
    offset = torch.arange(batch, device=index.device).view(-1, *([1] * (index.dim() - 1)))
    return flat[(index + offset * size).reshape(-1)].view(*index.shape, *values.shape[2:])


def pair_distance(query: Tensor, points: Tensor) -> Tensor:
    """Float32 distances ``[B, Q, P]`` as ``sqrt((q0 - p0)^2 + (q1 - p1)^2 + ...)``,
    accumulated coordinate by coordinate (the reference's formula, bit for bit in 2-D)."""
    q = query.detach().to(torch.float32)
    p = points.detach().to(torch.float32)
    dist = (q[:, :, None, 0] - p[:, None, :, 0]).square_()
    for c in range(1, q.size(-1)):
        dist.add_((q[:, :, None, c] - p[:, None, :, c]).square_())
    return dist.sqrt_()


def row_distance(a: Tensor, b: Tensor) -> Tensor:
    """Float32 distances ``[...]`` between matching rows of ``a [..., D]`` and ``b [..., D]``."""
    a, b = a.detach().to(torch.float32), b.detach().to(torch.float32)
    dist = (a[..., 0] - b[..., 0]).square()
    for c in range(1, a.size(-1)):
        dist = dist + (a[..., c] - b[..., c]).square()
    return dist.sqrt()


def _key_smallest(dist: Tensor, ids: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` smallest ``dist [..., P]`` (float32, >= 0), ties to the
    smallest ``ids [..., P]``: the float32 bit pattern and the id packed in one int64."""
    key = (dist.contiguous().view(torch.int32).to(torch.long) << 32) | ids
    return torch.topk(key, k, dim=-1, largest=False, sorted=True).indices


def _knn_lowest_native(query: Tensor, points: Tensor, k: int, valid: Tensor | None) -> Tensor:
    batch, num, _ = query.shape
    out = torch.empty(batch, num, k, dtype=torch.long, device=query.device)
    step = _chunk(num, batch * points.size(1))
    for i0 in range(0, num, step):
        i1 = min(num, i0 + step)
        dist = pair_distance(query[:, i0:i1], points)
        if valid is not None:
            dist.masked_fill_(~valid.unsqueeze(1), float("inf"))
        out[:, i0:i1] = smallest_k(dist, k)[1]
    return out


def _knn_lowest_triton(query: Tensor, points: Tensor, k: int, valid: Tensor | None) -> Tensor:
    from ._triton_launch import knn_search

    batch, num, dim = query.shape
    size = points.size(1)
    _, idx = knn_search(
        points.detach().to(torch.float32).reshape(batch * size, dim),
        query.detach().to(torch.float32).reshape(batch * num, dim),
        Clouds.from_lengths(None, batch, size, query.device),
        Clouds.from_lengths(None, batch, num, query.device),
        k,
        valid=None if valid is None else valid.reshape(-1),
        sqrt=True,
    )
    return idx.view(batch, num, k)


_KNN_IMPLS = {"native": _knn_lowest_native, "triton": _knn_lowest_triton}


def _knn_auto(device: torch.device) -> tuple[str, ...]:
    return ("triton", "native") if device.type == "cuda" else ("native",)


def knn_lowest_index(
    query: Tensor,
    points: Tensor,
    k: int,
    valid: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Indices ``[B, Q, k]`` of the ``k`` nearest ``points [B, P, D]`` of ``query [B, Q, D]``.

    Distances are ``sqrt(sum((q - p)^2))`` in float32 (:func:`pair_distance`), ranked
    ascending with ties to the lowest index. This is the reference's rule (KeOps
    ``argKmin`` on the square root, whose sequential insertion keeps the lower index);
    ranking square roots rather than squared distances matters when two different squared
    distances share one float32 square root. ``valid [B, P]`` bool turns points into
    distance ``inf`` (ranked after every valid point). ``k <= P``.

    Backends: ``"native"`` (brute force in chunks of queries, any device) and ``"triton"``
    (CUDA; CPU under ``TRITON_INTERPRET=1``), the same indices bit for bit; automatic
    choice: triton on CUDA, else native.
    """
    _, impl = select(
        "cluster_neighbourhood",
        _KNN_IMPLS,
        query.device,
        backend,
        lambda: _knn_auto(query.device),
    )
    return impl(query, points, k, valid)


def _fill_rows(out: Tensor, bad: Tensor, solve) -> None:
    """Recompute the rows ``bad [B, N]`` of ``out [B, N, ...]`` with ``solve(b, rows)``."""
    for b in bad.any(1).nonzero().flatten().tolist():
        rows = bad[b].nonzero().flatten()
        out[b, rows] = solve(b, rows)


def nearest_clusters(
    pos: Tensor,
    centers: Tensor,
    own: Tensor,
    k: int,
    valid: Tensor,
    spread: Tensor,
    tokens: Tensor | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest cluster ``centers [B, K, D]`` of every token ``pos [B, N, D]``.

    Exactly :func:`knn_lowest_index` (float32 square-root distance, ties to the lowest
    cluster index), computed without comparing every token with every center: each token
    ranks the ``L`` centers nearest to its own cluster's center ``own [B, N]``; by the
    triangle inequality that is exact whenever the ``k``-th found distance is below the
    ``L``-th candidate's distance from the own center minus the token's distance to it.
    The few tokens where this cannot be shown are searched by brute force.

    ``valid [B, K]`` marks existing clusters and ``spread [B, K]`` their radii (largest
    member distance to the mean); ``tokens [B, N]`` marks real tokens (padding rows get
    arbitrary results); ``backend`` goes to :func:`knn_lowest_index`. Returns
    ``(index [B, N, k], reach [B, N])``: ``reach`` is a lower bound on the distance from the
    token to any member of a cluster not chosen.
    """
    batch, num, _ = pos.shape
    size = centers.size(1)
    width = min(size, 4 * k + 8)
    widest = spread.masked_fill(~valid, 0.0).amax(-1, keepdim=True)  # [B, 1]

    def loose_reach(index: Tensor) -> Tensor:
        kth = row_distance(pos, gather_tokens(centers, index[..., -1]))
        return kth * (1 - 1e-5) - widest * (1 + 1e-5)

    if width == size:
        index = knn_lowest_index(pos, centers, k, valid, backend)
        return index, loose_reach(index)
    cand = knn_lowest_index(centers, centers, width, valid, backend)  # [B, K, L]
    radius = row_distance(centers, gather_tokens(centers, cand[..., -1]))  # [B, K]
    radius = radius.masked_fill(~gather_tokens(valid, cand[..., -1]), float("inf"))
    token_cand = gather_tokens(cand, own)  # [B, N, L]
    dist = row_distance(pos.unsqueeze(2), gather_tokens(centers, token_cand))
    dist = dist.masked_fill(~gather_tokens(valid, token_cand), float("inf"))
    pick = _key_smallest(dist, token_cand, k)
    index = token_cand.gather(-1, pick)
    kth = dist.gather(-1, pick[..., -1:]).squeeze(-1)
    home = row_distance(pos, gather_tokens(centers, own))
    far = gather_tokens(radius, own)
    slack = far - home  # every non-candidate center is at least this far
    tol = 1e-5 * (kth + home + far.clamp_max(1e30)) + 1e-30
    bad = ~(kth + tol < slack)
    if tokens is not None:
        bad = bad & tokens
    # members of unchosen candidates are at least (center distance - radius) away, members of
    # non-candidates at least (slack - widest radius)
    rest = dist.scatter(-1, pick, float("inf"))
    cand_spread = gather_tokens(spread, token_cand)
    near_rest = (rest - cand_spread) * (1 - 1e-5) - 1e-5 * cand_spread
    reach = torch.minimum(near_rest.amin(-1), slack * (1 - 1e-5) - widest * (1 + 1e-5) - tol)
    if bool(bad.any()):
        _fill_rows(
            index,
            bad,
            lambda b, rows: knn_lowest_index(
                pos[b : b + 1, rows], centers[b : b + 1], k, valid[b : b + 1], backend
            )[0],
        )
        reach = torch.where(bad, loose_reach(index), reach)
    return index, reach


def nearest_other_distance(
    pos: Tensor, lengths: Tensor | None = None, nbhd: Neighbourhood | None = None
) -> Tensor:
    """Float32 distance ``[B, N]`` from every point to the nearest other point of its cloud
    (the second-nearest distance of the reference's ``knn(pos, pos, 2)``; ``inf`` for a
    single-point cloud).

    With ``nbhd`` (and its ``reach``), the search stays inside each neighbourhood wherever
    the reach proves that nothing outside is closer. Other rows use
    :func:`pointset.ops.knn_dense` (its fastest backend), whose float32 squared distances
    are the same direct-difference sums, so the square roots are bit-identical.
    """
    batch, num, _ = pos.shape
    ids = torch.arange(num, device=pos.device)
    points = pos.detach().to(torch.float32)
    clouds = Clouds.from_lengths(lengths, batch, num, pos.device)
    sizes = clouds.counts_list

    def search(b: int, rows: Tensor) -> Tensor:
        if sizes[b] < 2:
            return torch.full((rows.numel(),), float("inf"), dtype=torch.float32, device=pos.device)
        cloud = points[b : b + 1, : sizes[b]]
        dist2, _ = knn_dense(cloud, points[b : b + 1, rows], 2)
        return dist2[0, :, 1].sqrt()

    if nbhd is None or nbhd.index is None or nbhd.reach is None:
        best = torch.empty(batch, num, dtype=torch.float32, device=pos.device)
        for b in range(batch):
            best[b, : sizes[b]] = search(b, ids[: sizes[b]])
        return best
    index = nbhd.index.expand(batch, -1, -1)
    dist = row_distance(pos.unsqueeze(2), gather_tokens(pos, index))
    drop = index == ids.view(1, -1, 1)
    if nbhd.mask is not None:
        drop = drop | ~nbhd.mask
    if nbhd.exclude is not None:
        drop = drop | nbhd.exclude
    best = dist.masked_fill(drop, float("inf")).amin(-1)
    bad = ~(best * (1 + 1e-5) <= nbhd.reach)
    if lengths is not None:
        bad = bad & clouds.valid_mask(num)
    if bool(bad.any()):
        _fill_rows(best, bad, search)
    return best


def check_neighbourhood_sizes(cluster_size: int, nbhd_size: int) -> None:
    """Validate the layer arguments that define neighbourhoods (raise ``ValueError``)."""
    for name, value in (("cluster_size", cluster_size), ("nbhd_size", nbhd_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if round(nbhd_size / cluster_size) < 1:
        raise ValueError(
            f"nbhd_size={nbhd_size} rounds to 0 clusters of cluster_size={cluster_size}; "
            f"use nbhd_size >= {cluster_size // 2 + 1}"
        )


def cluster_neighbourhood(
    pos: Tensor,
    cluster_size: int,
    nbhd_size: int,
    lengths: Sequence[int] | None = None,
    extent: Sequence[float] | None = None,
    per_cloud: bool = False,
    backend: str | None = None,
) -> Neighbourhood:
    r"""AFF neighbourhoods of padded clouds ``pos [B, N, D]``.

    A cloud of ``n`` tokens with ``nbhd_size >= n`` attends globally. Otherwise it is cut into
    ``k = ceil(n / m)`` balanced clusters (:func:`pointset.ops.balanced_cluster_dense`;
    ``m = 1`` keeps every token as its own cluster in index order), and every token's
    neighbourhood is the members of its ``nnc = min(round(nbhd_size / m), k)`` nearest
    cluster means (Python ``round``; :func:`knn_lowest_index`), nearest cluster first.

    Args:
        pos: ``[B, N, D]`` positions.
        cluster_size: tokens per cluster ``m``.
        nbhd_size: neighbourhood size (rounded to a multiple of ``m``).
        lengths: tokens per cloud (default: all ``N``).
        extent: lattice size per coordinate, see :func:`pointset.ops.balanced_cluster_dense`.
        per_cloud: cluster every cloud on its own (packed layout) instead of sharing the
            ratio normaliser over the batch (reference dense layout).
        backend: backend of the nearest-cluster search (:func:`knn_lowest_index`);
            default: automatic choice.

    Returns:
        :class:`Neighbourhood` with ``index [B, N, M]`` (or ``None``: global attention).

    Example::

        >>> pos = torch.rand(1, 64, 2)
        >>> nbhd = cluster_neighbourhood(pos, cluster_size=8, nbhd_size=16)
        >>> nbhd.index.shape
        torch.Size([1, 64, 16])
    """
    if not isinstance(pos, Tensor) or pos.dim() != 3:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must have shape [B, N, D], got {shape}")
    batch, num, dim = pos.shape
    check_points(pos.reshape(-1, dim) if batch * num else pos.new_zeros(0, max(dim, 1)))
    return cluster_neighbourhood_prechecked(
        pos, cluster_size, nbhd_size, lengths, extent, per_cloud, backend
    )


def cluster_neighbourhood_prechecked(
    pos: Tensor,
    cluster_size: int,
    nbhd_size: int,
    lengths: Sequence[int] | None = None,
    extent: Sequence[float] | None = None,
    per_cloud: bool = False,
    backend: str | None = None,
) -> Neighbourhood:
    """:func:`cluster_neighbourhood` for padded ``pos [B, N, D]`` whose values the caller
    has checked (finite floating positions); the size, length and extent checks remain."""
    batch, num, dim = pos.shape
    device = pos.device
    clouds = Clouds.from_lengths(lengths, batch, num, device)
    counts = clouds.counts_list
    extent = _check_extent(extent, dim)
    if extent is not None:
        _check_inside(pos, clouds, extent)
    is_global = [n <= nbhd_size for n in counts]
    if all(is_global) and all(n == num for n in counts):
        return Neighbourhood(None, None, None)

    length_t = clouds.counts
    m = cluster_size
    local = [b for b, g in enumerate(is_global) if not g]
    index = mask = exclude = None
    reach = torch.full((batch, num), float("inf"), device=device)
    width = 0
    if local:
        if m == 1:
            member = torch.arange(num, device=device).view(1, num, 1).expand(batch, -1, -1)
            cmask = (torch.arange(num, device=device) < length_t.view(-1, 1)).unsqueeze(-1)
            centers = pos.detach().to(torch.float32)
            num_clusters = length_t
            own = torch.arange(num, device=device).expand(batch, -1)
        else:
            clusters = balanced_cluster_dense_prechecked(
                pos, m, lengths=length_t, extent=extent, per_cloud=per_cloud
            )
            member, cmask, centers = clusters.member, clusters.mask, clusters.centers
            num_clusters = clusters.num_clusters
            rank = torch.empty_like(clusters.order)
            rank.scatter_(1, clusters.order, torch.arange(num, device=device).expand(batch, -1))
            own = torch.div(rank, m, rounding_mode="floor").clamp_max(centers.size(1) - 1)
        near_counts = [min(int(round(nbhd_size / m)), math.ceil(n / m)) for n in counts]
        nnc = max(near_counts[b] for b in local)
        width = nnc * m
        exists = torch.arange(centers.size(1), device=device) < num_clusters.view(-1, 1)
        spread = row_distance(gather_tokens(pos, member), centers.unsqueeze(2))  # [B, K, m]
        spread = spread.masked_fill(~cmask, 0.0).amax(-1)  # cluster radii
        tokens = torch.arange(num, device=device) < length_t.view(-1, 1)
        near, reach = nearest_clusters(pos, centers, own, nnc, exists, spread, tokens, backend)
        flat = near.reshape(batch, num * nnc)
        index = gather_tokens(member, flat).view(batch, num, width)
        mask = gather_tokens(cmask, flat).view(batch, num, width)
        slots = torch.tensor([c * m for c in near_counts], device=device)
        exclude = (torch.arange(width, device=device) >= slots.view(-1, 1)).unsqueeze(1)
        exclude = exclude.expand(batch, num, width)
        full_cover = torch.tensor(
            [near_counts[b] * m >= counts[b] for b in range(batch)], device=device
        )
        reach = torch.where(full_cover.view(-1, 1), float("inf"), reach)

    globals_ = [b for b, g in enumerate(is_global) if g]
    if globals_:
        full = max(max(counts[b] for b in globals_), width)
        slot = torch.arange(full, device=device)
        g_index = slot.clamp(max=num - 1).view(1, 1, full).expand(batch, num, full)
        g_exclude = (slot >= length_t.view(-1, 1)).unsqueeze(1).expand(batch, num, full)
        use_global = torch.tensor(is_global, device=device)
        reach = reach.masked_fill(use_global.view(-1, 1), float("inf"))
        if index is None:
            index, mask, exclude = g_index, torch.ones_like(g_exclude), g_exclude
        else:
            pad = full - width
            index = torch.nn.functional.pad(index, (0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad), value=True)
            exclude = torch.nn.functional.pad(exclude, (0, pad), value=True)
            use_global = use_global.view(-1, 1, 1)
            index = torch.where(use_global, g_index, index)
            mask = torch.where(use_global, torch.ones_like(mask), mask)
            exclude = torch.where(use_global, g_exclude, exclude)

    mask = None if bool(mask.all()) else mask
    exclude = None if not bool(exclude.any()) else exclude
    return Neighbourhood(index.contiguous(), mask, exclude, reach)
