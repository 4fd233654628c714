"""PointMLP's label-smoothed cross-entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def smoothed_cross_entropy(logits: Tensor, target: Tensor, eps: float = 0.2) -> Tensor:
    r"""Cross-entropy against smoothed one-hot targets, as in PointMLP / DGCNN.

    The target distribution puts :math:`1 - \epsilon` on the true class and spreads
    :math:`\epsilon` evenly over the **other** :math:`C - 1` classes:

    .. math::
        q_c = (1 - \epsilon)\,[c = y] + \frac{\epsilon}{C - 1}\,[c \neq y], \qquad
        \mathcal{L} = -\frac1B \sum_b \sum_c q_{bc} \log \mathrm{softmax}(z_b)_c .

    (``torch.nn.functional.cross_entropy(label_smoothing=...)`` spreads over all ``C``
    classes instead, which is a different target.) ``eps = 0`` is plain cross-entropy.

    Args:
        logits: ``[B, C]`` unnormalised scores.
        target: ``[B]`` class indices.
        eps: smoothing :math:`\epsilon` in ``[0, 1)``. (default: ``0.2``)

    Returns:
        scalar mean loss.
    """
    if eps == 0:
        return F.cross_entropy(logits, target)
    n = logits.size(1)
    logp = F.log_softmax(logits, dim=1)
    true = logp.gather(1, target.view(-1, 1)).squeeze(1)
    rest = logp.sum(dim=1) - true
    return -((1.0 - eps) * true + eps / (n - 1) * rest).mean()
