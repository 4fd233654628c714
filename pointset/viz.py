"""Pictures of what Context Cluster layers do: the hard cluster assignment as a PNG.

:func:`save_cluster_map` runs a Context Cluster image backbone
(:class:`~pointset.models.coc.ContextClusterNet`) on an image, reads the hard assignment of
one of its :class:`~pointset.nn.ContextCluster` token mixers (``stage``, ``block``, one
head) and draws the image beside the image overlaid with one colour per cluster. Given a
bare :class:`~pointset.nn.ContextCluster` layer and a point set, it draws the points
coloured by cluster instead (2-D or 3-D scatter, centers marked). Only the first image /
cloud of a batch is drawn. Figures are rendered with matplotlib's Agg canvas, so no display
is needed and the global pyplot state is left alone.

Example::

    >>> from pointset.models.coc import coc_tiny
    >>> save_cluster_map(coc_tiny(), torch.rand(3, 224, 224), "clusters.png", stage=1)
    PosixPath('clusters.png')
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pointset.data.image import as_float_image, to_image
from pointset.data.point_set import PointSet
from pointset.nn import ContextCluster

__all__ = ["ClusterMap", "cluster_map", "save_cluster_map"]


class ClusterMap(NamedTuple):
    """The hard assignment of one Context Cluster layer on the first image / cloud.

    Attributes:
        assignment: ``[N]`` long center id of every point (feature-map cell in row-major
            order for images); ids are the layer's (``ContextCluster(...,
            return_assignment=True)``).
        image: ``[3, H, W]`` float image in ``[0, 1]`` for display, or ``None`` for points.
        grid: ``(H', W')`` of the layer's feature map (images), else ``None``.
        pos: ``[N, D]`` point positions (points; grid point sets as ``(col, -row)`` so
            that the picture stands upright), else ``None``.
        centers: ``[M, D]`` center positions of the cloud (point path), else ``None``.
    """

    assignment: Tensor
    image: Tensor | None = None
    grid: tuple[int, int] | None = None
    pos: Tensor | None = None
    centers: Tensor | None = None


def _stage_layer(model: nn.Module, stage: int, block: int) -> ContextCluster:
    """The token mixer of ``block`` in ``stage`` of a ContextClusterNet."""
    network = getattr(model, "network", None)
    if not isinstance(network, nn.ModuleList):
        raise ValueError(
            "model must be a pointset.models.coc ContextClusterNet (with a `network` of "
            f"stages) or a ContextCluster layer, got {type(model).__name__}"
        )
    stages = [m for m in network if isinstance(m, nn.Sequential)]
    if not 0 <= stage < len(stages):
        raise ValueError(f"stage must lie in [0, {len(stages)}), got {stage}")
    if not 0 <= block < len(stages[stage]):
        raise ValueError(
            f"block must lie in [0, {len(stages[stage])}) for stage {stage}, got {block}"
        )
    layer = getattr(stages[stage][block], "token_mixer", None)
    if not isinstance(layer, ContextCluster):
        raise ValueError(f"stage {stage} block {block} has no ContextCluster token mixer")
    return layer


def _display(image: Tensor) -> Tensor:
    """``[C, H, W]`` -> ``[3, H, W]`` in ``[0, 1]`` (min-max stretched if outside)."""
    image = image.detach().float().cpu()
    image = image[:3] if image.size(0) >= 3 else image[:1].expand(3, -1, -1)
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        image = (image - lo) / max(hi - lo, 1e-12)
    return image


class _Recording:
    """Capture ``layer``'s assignment during one forward of ``model`` (in eval mode, without
    grad): the layer's ``forward`` and ``forward_dense`` are wrapped for the duration so
    that they run with ``return_assignment=True`` and hand their usual output on.

    After the forward, ``assignment`` holds the layer's last ``[N, heads]`` assignment and
    ``shape`` the shape of its input ``x``.
    """

    def __init__(self, model: nn.Module, layer: ContextCluster) -> None:
        self.model, self.layer = model, layer
        self.assignment: Tensor | None = None
        self.shape: tuple[int, ...] | None = None

    def _wrap(self, method):
        def call(x, *args, return_assignment: bool = False, **kwargs):
            out, self.assignment = method(x, *args, return_assignment=True, **kwargs)
            self.shape = tuple(x.shape)
            return (out, self.assignment) if return_assignment else out

        return call

    def __enter__(self) -> _Recording:
        self.training = self.model.training
        self.grad = torch.is_grad_enabled()
        self.model.eval()
        torch.set_grad_enabled(False)
        for name in ("forward", "forward_dense"):  # instance attributes shadow the methods
            setattr(self.layer, name, self._wrap(getattr(self.layer, name)))
        return self

    def __exit__(self, *exc) -> None:
        for name in ("forward", "forward_dense"):
            delattr(self.layer, name)
        torch.set_grad_enabled(self.grad)
        self.model.train(self.training)


def _image_map(model: nn.Module, data, stage: int, block: int, head: int) -> ClusterMap:
    if isinstance(data, PointSet):
        if not data.is_grid:
            raise ValueError(
                "a ContextClusterNet needs an image or a full-grid point set; for a general "
                "point cloud pass a ContextCluster layer instead of the model"
            )
        data = to_image(data)
    image, _ = as_float_image(data, "image")
    layer = _stage_layer(model, stage, block)
    with _Recording(model, layer) as record:
        model(image)
    _, _, h, w = record.shape
    assignment = record.assignment[: h * w, head].clone()
    return ClusterMap(assignment, image=_display(image[0]), grid=(h, w))


def _point_map(layer: ContextCluster, points: PointSet, head: int) -> ClusterMap:
    if not isinstance(points, PointSet) or points.x is None or points.pos is None:
        raise ValueError(
            "a ContextCluster layer is drawn on a PointSet with x and pos, got "
            f"{type(points).__name__}"
        )
    if points.pos.dim() != 2 or points.pos.size(1) not in (2, 3):
        raise ValueError(f"pos must be [N, 2] or [N, 3] to draw, got {tuple(points.pos.shape)}")
    batch = points.batch
    first = points.pos.size(0) if batch is None else int((batch == batch[0]).sum())
    centers = None
    with _Recording(layer, layer) as record:
        if points.is_grid:
            layer(points.x, grid_size=points.grid_size)
        else:
            plan = layer.plan(points.pos, batch)
            layer(points.x, plan=plan)
            keep = slice(None) if plan.center_batch is None else plan.center_batch == 0
            centers = plan.center_pos[keep].detach().cpu()
    assignment = record.assignment[:first, head].clone()
    pos = points.pos[:first].detach().cpu()
    if points.is_grid and pos.size(1) == 2:  # (row, col) -> (x, y) = (col, -row): upright
        pos = torch.stack([pos[:, 1], -pos[:, 0]], dim=1)
    return ClusterMap(assignment, pos=pos, centers=centers)


def cluster_map(
    model: nn.Module, image_or_pointset, stage: int = 0, block: int = 0, head: int = 0
) -> ClusterMap:
    """The hard assignment that :func:`save_cluster_map` draws (see the module docstring).

    Args:
        model: a ContextClusterNet (then the input is an image ``[3, H, W]`` /
            ``[B, 3, H, W]``, uint8 or float, or a full-grid :class:`PointSet` of one), or a
            :class:`~pointset.nn.ContextCluster` layer (then a :class:`PointSet` whose ``x``
            has the layer's channels; ``stage`` and ``block`` must be 0).
        image_or_pointset: the input.
        stage, block: which token mixer of the model.
        head: which head's assignment.
    """
    if isinstance(model, ContextCluster):
        if stage or block:
            raise ValueError("a single ContextCluster layer has only stage 0, block 0")
        layer = model
    else:
        layer = _stage_layer(model, stage, block)
    if not 0 <= head < layer.heads:
        raise ValueError(f"head must lie in [0, {layer.heads}), got {head}")
    if isinstance(model, ContextCluster):
        return _point_map(model, image_or_pointset, head)
    return _image_map(model, image_or_pointset, stage, block, head)


def _colours(assignment: Tensor):
    """RGB ``[N, 3]`` numpy colours, one per cluster (tab20 cycled over the cluster rank)."""
    from matplotlib import colormaps

    _, rank = torch.unique(assignment, return_inverse=True)
    return colormaps["tab20"](rank.numpy() % 20)[:, :3]


def save_cluster_map(
    model: nn.Module,
    image_or_pointset,
    path: str | Path,
    stage: int = 0,
    block: int = 0,
    head: int = 0,
) -> Path:
    """Draw the hard cluster assignment of a Context Cluster layer and save it as a PNG.

    For an image: the image, then the image overlaid (half transparent) with one colour per
    cluster of the chosen layer, upsampled from its feature map by nearest neighbour. For a
    point set and a layer: a scatter of the first cloud coloured by cluster, centers marked
    with black crosses. Arguments as in :func:`cluster_map`. Returns the written path.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    result = cluster_map(model, image_or_pointset, stage, block, head)
    path = Path(path)
    colours = _colours(result.assignment.cpu())
    clusters = int(torch.unique(result.assignment).numel())
    title = f"{clusters} clusters, head {head}"
    if result.image is not None:
        title = f"stage {stage}, block {block}: " + title
        image = result.image.permute(1, 2, 0).numpy()
        h, w = image.shape[:2]
        gh, gw = result.grid
        rows = np.minimum(np.arange(h) * gh // h, gh - 1)
        cols = np.minimum(np.arange(w) * gw // w, gw - 1)
        cells = rows[:, None] * gw + cols[None, :]
        overlay = 0.5 * image + 0.5 * colours[cells]
        fig = Figure(figsize=(8, 4.3))
        for i, (picture, name) in enumerate(((image, "image"), (overlay, title))):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.imshow(np.clip(picture, 0.0, 1.0), interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    else:
        pos = result.pos.float().numpy()
        three = pos.shape[1] == 3
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot(1, 1, 1, projection="3d" if three else None)
        ax.scatter(*pos.T, c=colours, s=6, linewidths=0)
        if result.centers is not None:
            ax.scatter(*result.centers.float().numpy().T, c="black", marker="x", s=40)
        if not three:
            ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
