"""kMaX-DeepLab's k-means cross-attention on packed point sets."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from pointset._checks import batch_counts, check_batch

__all__ = ["KMeansCrossAttention", "KMeansStep", "cloud_logits"]


class KMeansStep(NamedTuple):
    """Result of one k-means cross-attention step.

    Attributes:
        update: ``[B, L, V]`` sum of the values of the points assigned to each (cloud,
            cluster); 0 for empty clusters.
        mask_logits: ``[N, L]`` each point's logits against the ``L`` centers of its own
            cloud (after ``logit_norm`` when one is given).
        assignment: ``[N]`` long, the cluster (``0..L-1``) each point is assigned to.
    """

    update: Tensor
    mask_logits: Tensor
    assignment: Tensor


def cloud_logits(x: Tensor, centers: Tensor, batch: Tensor, counts: Tensor) -> Tensor:
    """Dot products of every point with the centers of its own cloud.

    ``x [N, E]`` (points sorted by cloud), ``centers [B, L, E]``, ``batch [N]``,
    ``counts [B]`` (points per cloud) -> ``[N, L]``. Never forms the ``[N, B * L]`` products
    against other clouds' centers.
    """
    num_clouds = centers.size(0)
    if bool((counts == counts[0]).all()):
        # equal clouds (e.g. a batch of images): one batched matmul
        n = x.size(0) // num_clouds
        return torch.bmm(x.view(num_clouds, n, -1), centers.transpose(1, 2)).reshape(x.size(0), -1)
    parts = torch.split(x, counts.tolist())
    return torch.cat([p @ c.t() for p, c in zip(parts, centers.unbind(0))], dim=0)


class KMeansCrossAttention(nn.Module):
    r"""The k-means cross-attention of `"kMaX-DeepLab: k-means Mask Transformer"
    <https://arxiv.org/abs/2207.04044>`_ (Yu et al., ECCV 2022), on packed point sets.

    Cross-attention between ``L`` cluster centers and the points is replaced by one
    k-means step. Point :math:`i` of cloud :math:`b_i`, with embedding :math:`e_i` and value
    :math:`v_i`, is compared with the centers :math:`k_{b,l}` of **its own cloud only**,

    .. math::
        m_{il} = \mathrm{norm}\big(\langle e_i, k_{b_i, l}\rangle\big), \qquad
        a_i = \operatorname{arg\,max}_l\, m_{il}, \qquad
        u_{b,l} = \sum_{i:\, b_i = b,\ a_i = l} v_i ,

    a hard one-hot assignment (ties go to the first cluster, as ``torch.max``) computed on
    detached logits, so **no gradient flows through the assignment** (no straight-through
    estimator, as the official code and the TF reference). The update is a **sum**, not a
    mean, formed by one ``index_add`` over ``b_i L + a_i`` (accumulated in at least float32,
    as the official code under mixed precision); empty clusters get 0. Gradients
    reach :math:`v` through the sum and :math:`e`, :math:`k` through the returned logits only.

    What lives here and what does not. This layer has **no parameters**: it is the k-means
    step itself (logits, argmax, scatter sum). The parts of the official
    ``kMaXTransformerLayer`` around it stay in
    :class:`~pointset.nn.KMaXDecoderLayer`, because their official keys are flat there
    (``_kmeans_query_batch_norm_retrieved_value``, ``_kmeans_query_conv3_bn``) and because
    the mask logits double as the predictor's output: the 1-channel BatchNorm on the logits
    (``_predcitor._pixel_space_mask_batch_norm``) is passed in as ``logit_norm``, and the
    BatchNorm on the update, the ConvBN to the center width and the residual are applied by
    the decoder layer. The argmax is taken after ``logit_norm``, as in the official code
    (equal to the argmax of the raw logits while its scale is positive).

    Args:
        None. (The module is stateless; it is an ``nn.Module`` so it composes and prints.)

    Shapes:
        - **input:** ``x [N, E]`` point embeddings (points sorted by cloud), ``pos``
          (unused), ``batch [N]`` (optional, default one cloud); keywords
          ``centers [B, L, E]`` (the mask kernels), ``value [N, V]``, ``logit_norm``: a callable ``[N * L, 1] -> [N * L, 1]``
          (e.g. a 1-channel ``BatchNorm1d``, statistics over all valid (point, cluster)
          pairs) or ``None``.
        - **output:** :class:`KMeansStep` with ``update [B, L, V]``, ``mask_logits [N, L]``,
          ``assignment [N]``.
    """

    def reset_parameters(self) -> None:
        """Nothing to reset: the layer has no parameters."""

    def forward(
        self,
        x: Tensor,
        pos: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        centers: Tensor,
        value: Tensor,
        logit_norm: Callable[[Tensor], Tensor] | None = None,
    ) -> KMeansStep:
        """One k-means step; see the class docstring (``pos`` is not used)."""
        counts = self._check(x, centers, value, batch)
        return self._step(x, batch, counts, centers, value, logit_norm)

    @staticmethod
    def _step(
        x: Tensor,
        batch: Tensor | None,
        counts: Tensor,
        centers: Tensor,
        value: Tensor,
        logit_norm: Callable[[Tensor], Tensor] | None = None,
    ) -> KMeansStep:
        """The step on checked inputs (``counts [B]``: points per cloud of ``batch``)."""
        num_clouds, num_clusters = centers.size(0), centers.size(1)
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        logits = cloud_logits(x, centers, batch, counts)
        if logit_norm is not None:
            logits = logit_norm(logits.reshape(-1, 1)).view_as(logits)
        with torch.no_grad():
            assignment = logits.detach().argmax(dim=1)
        slot = batch.long() * num_clusters + assignment
        # accumulated in at least float32 (the official code sums in float32 under mixed
        # precision), returned in the dtype of ``value``
        acc = value.to(torch.promote_types(value.dtype, torch.float32))
        update = acc.new_zeros(num_clouds * num_clusters, acc.size(1)).index_add(0, slot, acc)
        update = update.to(value.dtype)
        return KMeansStep(update.view(num_clouds, num_clusters, -1), logits, assignment)

    @staticmethod
    def _check(x: Tensor, centers: Tensor, value: Tensor, batch: Tensor | None) -> Tensor:
        """Validate the inputs; return the points per cloud ``[B]``."""
        for name, t, rank in (("x", x, 2), ("centers", centers, 3), ("value", value, 2)):
            if not isinstance(t, Tensor) or t.dim() != rank or not t.is_floating_point():
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a floating tensor of rank {rank}, got {shape}")
        if x.size(0) == 0:
            raise ValueError("x is empty (0 points)")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
            raise ValueError(f"x contains NaN or inf (first bad point: row {bad})")
        if centers.size(0) == 0 or centers.size(1) == 0:
            raise ValueError(
                f"centers must hold B >= 1 clouds of L >= 1, got {tuple(centers.shape)}"
            )
        if centers.size(2) != x.size(1):
            raise ValueError(
                f"centers have {centers.size(2)} channels but x has {x.size(1)} "
                f"(x {tuple(x.shape)}, centers {tuple(centers.shape)})"
            )
        if value.size(0) != x.size(0):
            raise ValueError(f"value has {value.size(0)} rows but x has {x.size(0)} points")
        batch = check_batch(batch, x.size(0))
        counts = batch_counts(batch, x.size(0)).to(x.device)
        if counts.numel() > centers.size(0):
            raise ValueError(
                f"batch names {counts.numel()} clouds but centers hold {centers.size(0)}"
            )
        counts = torch.nn.functional.pad(counts, (0, centers.size(0) - counts.numel()))
        if bool((counts == 0).any()):
            empty = int((counts == 0).nonzero()[0, 0])
            raise ValueError(
                f"cloud {empty} is empty (no points); every cloud of the {centers.size(0)} "
                f"in centers needs at least one"
            )
        return counts
