"""``PointCloudDataset``: an in-memory classification dataset of equal-size point clouds.

Items are :class:`~pointset.PointSet` objects with ``pos [P, 3]`` and ``y [1]``, so PyG's
``DataLoader`` batches them into ``pos [B * P, 3]``, ``batch [B * P]`` and ``y [B]``. The
whole split is also available as dense tensors (``points [N, P, 3]``, ``labels [N]``) for
trainers that batch by indexing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data import PointSet
from ..ops import fps_dense
from .errors import DatasetError

#: Ways to pick ``num_points`` of each stored cloud.
SAMPLINGS = ("first", "fps")

#: Clouds per FPS call when sampling a whole split.
_FPS_CHUNK = 512


def sample_indices(points: Tensor, num_points: int, sampling: str = "first") -> Tensor:
    """Which ``num_points`` of each cloud of ``points [N, P, 3]`` to keep.

    ``"first"`` keeps the first ``num_points`` (the official ScanObjectNN / ModelNet40
    protocol, whose stored point order is random); ``"fps"`` runs farthest point sampling
    from each cloud's first point (:func:`pointset.ops.fps_dense`, deterministic).

    Returns:
        ``[N, num_points]`` long indices into the second dimension of ``points``.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be a positive int, got {num_points!r}")
    if num_points > points.size(1):
        raise DatasetError(
            f"num_points={num_points} is more than the {points.size(1)} points stored per cloud"
        )
    if sampling == "first":
        return torch.arange(num_points).expand(points.size(0), num_points)
    return torch.cat(
        [fps_dense(chunk, num_points, backend="native") for chunk in points.split(_FPS_CHUNK)]
    )


def gather_points(values: Tensor, index: Tensor) -> Tensor:
    """``values [N, P, ...]`` at ``index [N, M]`` -> ``[N, M, ...]`` (contiguous)."""
    if bool((index == torch.arange(index.size(1))).all()):
        return values[:, : index.size(1)].contiguous()
    shape = index.shape + values.shape[2:]
    flat = index.reshape(*index.shape, *([1] * (values.dim() - 2))).expand(shape)
    return torch.gather(values, 1, flat)


class PointCloudDataset(Dataset):
    """Equal-size labelled point clouds held in memory.

    Args:
        points: ``[N, P, 3]`` float32 positions.
        labels: ``[N]`` int64 class indices.
        class_names: names in label order (default: the class attribute ``class_names``).
        transform: called on each item (a :class:`~pointset.PointSet`) and returns one.

    Attributes:
        points: ``[N, P, 3]`` float32.
        labels: ``[N]`` int64.
        class_names: tuple of ``num_classes`` names.
    """

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        points: Tensor,
        labels: Tensor,
        class_names: Sequence[str] | None = None,
        transform: Callable | None = None,
    ) -> None:
        if points.dim() != 3 or points.size(2) != 3:
            raise ValueError(f"points must have shape [N, P, 3], got {tuple(points.shape)}")
        if labels.shape != (points.size(0),):
            raise ValueError(
                f"labels must have shape [{points.size(0)}], got {tuple(labels.shape)}"
            )
        self.points = points
        self.labels = labels.long()
        if class_names is not None:
            self.class_names = tuple(class_names)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_points(self) -> int:
        """Points per cloud ``P``."""
        return self.points.size(1)

    def __len__(self) -> int:
        return self.points.size(0)

    def __getitem__(self, index: int) -> PointSet:
        item = PointSet(pos=self.points[index], y=self.labels[index : index + 1])
        return self.transform(item) if self.transform is not None else item

    def class_counts(self) -> Tensor:
        """``[num_classes]`` number of clouds per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} clouds x {self.num_points} points, "
            f"{self.num_classes} classes)"
        )
