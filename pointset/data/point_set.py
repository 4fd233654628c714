"""``PointSet``: one data object for images, RGBD frames and 3-D scans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from .._checks import check_batch, check_points

#: Position dimensions a point set may have: 2 (image planes) or 3 (space).
POS_DIMS = (2, 3)

#: Keys with a fixed meaning; every other tensor whose first dimension is N is per point.
_STRUCTURAL = ("batch", "ptr", "grid_size")


def _as_grid_size(grid_size: Any, device: torch.device | None) -> Tensor:
    """``(H, W)``, ``[2]`` or ``[B, 2]`` -> LongTensor ``[B, 2]``."""
    if isinstance(grid_size, Tensor):
        if grid_size.is_floating_point() or grid_size.dtype == torch.bool:
            raise ValueError(f"grid_size must hold integers, got dtype {grid_size.dtype}")
        out = grid_size.to(dtype=torch.long)
    else:
        try:
            out = torch.as_tensor(grid_size, dtype=torch.long, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"grid_size must be (H, W) or a [B, 2] tensor, got {grid_size!r}"
            ) from exc
    if out.dim() == 1:
        out = out.unsqueeze(0)
    if out.dim() != 2 or out.size(1) != 2:
        raise ValueError(f"grid_size must be (H, W), [2] or [B, 2], got shape {tuple(out.shape)}")
    if out.numel() and int(out.min()) < 1:
        raise ValueError(f"grid_size entries must be >= 1, got {out.tolist()}")
    return out


class PointSet(Data):
    r"""A set of points, each with a feature vector and a position.

    A :class:`torch_geometric.data.Data` subclass, so point sets batch with
    :meth:`torch_geometric.data.Batch.from_data_list` and
    :class:`torch_geometric.loader.DataLoader` and feed any PyG layer.

    Attributes (all optional except ``pos`` when any attribute is given):

    - ``x: [N, C]`` point features (colours, CoC channels, learned features).
    - ``pos: [N, D]`` floating positions, ``D`` = 2 (image plane, ``(row, col)``) or 3
      (space). Other ``D`` are rejected.
    - ``batch: [N]`` cloud index of each point, sorted (set by batching).
    - ``grid_size: [B, 2]`` long, ``(H, W)`` per cloud: the cloud's points are the full
      ``H x W`` grid in row-major order (``index = row * W + col``), as made from an image
      or feature map. Stored as ``[1, 2]`` for one cloud so that batching stacks it to
      ``[B, 2]``. Layers may use it for a dense fast path.
    - ``pixel: [N, 2]`` long, ``(row, col)`` of the source pixel (RGBD frames), so results
      map back to the image.
    - any further attribute, as with :class:`~torch_geometric.data.Data` (``normal``,
      ``y``, ...).

    Construction validates the attributes and raises ``ValueError`` naming the problem:
    non-finite or non-floating ``pos``, ``D`` not in ``{2, 3}``, ``x`` of another length
    than ``pos``, an unsorted ``batch``, a grid record whose ``H * W`` differs from the
    cloud's point count. PyG builds empty instances internally (collate, copy, slicing);
    ``PointSet()`` with no attributes is therefore allowed and not validated. Call
    :meth:`validate` after changing attributes by hand.

    Example::

        >>> ps = PointSet(x=torch.rand(5, 3), pos=torch.rand(5, 3))
        >>> ps.num_points, ps.num_clouds
        (5, 1)
    """

    def __init__(
        self,
        x: Tensor | None = None,
        pos: Tensor | None = None,
        *,
        batch: Tensor | None = None,
        grid_size: Any = None,
        pixel: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(x=x, pos=pos, **kwargs)
        if batch is not None:
            self.batch = batch
        if grid_size is not None:
            device = pos.device if isinstance(pos, Tensor) else None
            self.grid_size = _as_grid_size(grid_size, device)
        if pixel is not None:
            self.pixel = pixel
        if any(v is not None for v in (x, pos, batch, grid_size, pixel)):
            self._check()

    # -- attributes with a fixed meaning -------------------------------------------------

    @property
    def grid_size(self) -> Tensor | None:
        """``[B, 2]`` long ``(H, W)`` per cloud, or ``None`` when not a full grid."""
        return self["grid_size"] if "grid_size" in self._store else None

    @grid_size.setter
    def grid_size(self, value: Any) -> None:
        if value is None:
            if "grid_size" in self._store:
                del self._store["grid_size"]
            return
        self._store.grid_size = _as_grid_size(value, None)

    @property
    def pixel(self) -> Tensor | None:
        """``[N, 2]`` long ``(row, col)`` of each point's source pixel, or ``None``."""
        return self["pixel"] if "pixel" in self._store else None

    @pixel.setter
    def pixel(self, value: Tensor | None) -> None:
        self._store.pixel = value

    @property
    def num_points(self) -> int:
        """Total number of points ``N`` over all clouds."""
        if self.pos is not None:
            return self.pos.size(0)
        return int(self.num_nodes or 0)

    @property
    def num_clouds(self) -> int:
        """Number of clouds ``B`` (1 for an unbatched point set)."""
        if isinstance(self, Batch):
            return int(self.num_graphs)
        if self.batch is None:
            return 1
        if self.grid_size is not None:
            return self.grid_size.size(0)
        return int(self.batch.max()) + 1 if self.batch.numel() else 0

    def cloud_sizes(self) -> Tensor:
        """Points per cloud: LongTensor ``[B]`` on the positions' device."""
        device = self.pos.device if self.pos is not None else None
        if self.batch is None:
            return torch.tensor([self.num_points], dtype=torch.long, device=device)
        return torch.bincount(self.batch, minlength=self.num_clouds)

    @property
    def is_grid(self) -> bool:
        """Whether the points are full ``H x W`` grids in row-major order.

        True when a grid record is present and still matches the cloud sizes (operations
        that drop points, such as ``subgraph``, leave a stale record: this then reads
        ``False``).
        """
        grid = self.grid_size
        if grid is None or self.pos is None:
            return False
        sizes = self.cloud_sizes()
        if grid.size(0) != sizes.numel():
            return False
        return bool((grid.prod(dim=1).to(sizes.device) == sizes).all())

    # -- validation ----------------------------------------------------------------------

    def _check(self) -> None:
        pos = self.pos
        if pos is None:
            raise ValueError(
                "PointSet needs pos [N, D]; got "
                + ", ".join(
                    f"{k} {tuple(v.shape)}" for k, v in self.items() if isinstance(v, Tensor)
                )
            )
        check_points(pos, "pos", allow_empty=True)
        if pos.size(1) not in POS_DIMS:
            raise ValueError(
                f"pos must have D = 2 (image plane) or 3 (space) coordinates per point, "
                f"got shape {tuple(pos.shape)}"
            )
        n = pos.size(0)
        x = self.x
        if x is not None:
            if not isinstance(x, Tensor) or x.dim() != 2:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"x must be a [N, C] tensor, got {shape}")
            if x.size(0) != n:
                raise ValueError(
                    f"x has {x.size(0)} rows but pos has {n} points "
                    f"(x {tuple(x.shape)}, pos {tuple(pos.shape)})"
                )
        for key, value in self.items():
            if isinstance(value, Tensor) and value.device != pos.device:
                raise ValueError(f"{key} is on {value.device} but pos is on {pos.device}")
        batch = check_batch(self.batch, n)
        pixel = self.pixel
        if pixel is not None:
            if not isinstance(pixel, Tensor) or pixel.shape != (n, 2):
                shape = tuple(pixel.shape) if isinstance(pixel, Tensor) else type(pixel).__name__
                raise ValueError(f"pixel must have shape [{n}, 2] (row, col), got {shape}")
            if pixel.is_floating_point() or pixel.dtype == torch.bool:
                raise ValueError(f"pixel must be an integer tensor, got dtype {pixel.dtype}")
        grid = self.grid_size
        if grid is not None:
            if batch is None:
                sizes = [n]
            elif isinstance(self, Batch):
                sizes = torch.bincount(batch, minlength=int(self.num_graphs)).tolist()
            else:
                sizes = torch.bincount(batch, minlength=grid.size(0)).tolist()
            if grid.size(0) != len(sizes):
                raise ValueError(
                    f"grid_size has {grid.size(0)} rows but the point set has {len(sizes)} clouds"
                )
            for i, ((h, w), m) in enumerate(zip(grid.tolist(), sizes)):
                if h * w != m:
                    raise ValueError(
                        f"grid_size of cloud {i} is {h} x {w} = {h * w} points, "
                        f"but the cloud has {m} points"
                    )

    def validate(self, raise_on_error: bool = True) -> bool:
        """PyG's checks plus the point-set checks of the class docstring.

        Returns ``True`` when valid; otherwise raises ``ValueError`` (or returns ``False``
        when ``raise_on_error=False``).
        """
        try:
            self._check()
        except ValueError:
            if raise_on_error:
                raise
            return False
        return super().validate(raise_on_error=raise_on_error)

    # -- per-cloud access ----------------------------------------------------------------

    def clouds(self) -> list[PointSet]:
        """The clouds of a batched point set, each as its own ``PointSet``.

        An unbatched point set returns ``[self]``. Per-point attributes (first dimension
        ``N``) are sliced, ``grid_size`` is split by rows, other attributes are shared.
        """
        if isinstance(self, Batch):
            return self.to_data_list()
        if self.batch is None:
            return [self]
        n = self.num_points
        sizes = self.cloud_sizes().tolist()
        starts = [0]
        for s in sizes:
            starts.append(starts[-1] + s)
        out = []
        for i in range(len(sizes)):
            lo, hi = starts[i], starts[i + 1]
            attrs: dict[str, Any] = {}
            for key, value in self.items():
                if key in ("batch", "ptr"):
                    continue
                if key == "grid_size":
                    attrs[key] = value[i : i + 1]
                elif isinstance(value, Tensor) and value.dim() >= 1 and value.size(0) == n:
                    attrs[key] = value[lo:hi]
                else:
                    attrs[key] = value
            out.append(PointSet(**attrs))
        return out

    # -- layout (thin wrapper) -----------------------------------------------------------

    def to_dense(
        self, key: str = "x", fill_value: float = 0.0, max_num: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Padded layout of attribute ``key``: ``(dense [B, Nmax, C], mask [B, Nmax])``.

        See :func:`pointset.data.layout.to_dense`.
        """
        from .layout import to_dense

        value = self[key] if key in self._store else None
        if value is None:
            raise ValueError(f"point set has no attribute {key!r}; it has {sorted(self.keys())}")
        return to_dense(value, self.batch, fill_value, max_num, batch_size=self.num_clouds)


def batch_from_packed(
    sizes: Sequence[int] | Tensor,
    grid_size: Tensor | None = None,
    **per_point: Tensor | None,
) -> PointSet:
    """Build a batched ``PointSet`` (a PyG ``Batch``) from packed per-point tensors.

    ``sizes`` holds the points per cloud; each tensor in ``per_point`` has
    ``sum(sizes)`` rows and is split into the clouds in order. ``grid_size [B, 2]`` is
    split by rows. The result batches, slices and ``to_data_list``\\ s like any
    ``Batch.from_data_list`` output.
    """
    sizes = [int(s) for s in (sizes.tolist() if isinstance(sizes, Tensor) else sizes)]
    parts = {k: (v.split(sizes) if v is not None else None) for k, v in per_point.items()}
    clouds = []
    for i in range(len(sizes)):
        attrs = {k: (v[i] if v is not None else None) for k, v in parts.items()}
        if grid_size is not None:
            attrs["grid_size"] = grid_size[i : i + 1]
        clouds.append(PointSet(**attrs))
    return Batch.from_data_list(clouds)
