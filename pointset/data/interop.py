"""Conversions to and from Open3D and pytorch3d point clouds (imported lazily)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._color import split_color
from .point_set import PointSet, batch_from_packed

_HINTS = {
    "open3d": "pip install 'pointset[open3d]' (Debian/Ubuntu also need: apt-get install libusb-1.0-0)",
    "pytorch3d": "see https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md",
}


def _require(module: str) -> ModuleType:
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this conversion needs the '{top}' package: {_HINTS[top]}") from exc


def to_open3d(points: PointSet, x_as: str = "auto") -> Any:
    """One-cloud ``PointSet`` -> ``open3d.geometry.PointCloud`` (float64 copies, on CPU).

    ``pos [N, 3]`` -> ``points``; ``normal [N, 3]`` -> ``normals``; ``x`` -> ``colors`` as
    decided by ``x_as`` (see :func:`pointset.data._color.split_color`): with ``"auto"``,
    ``x`` is exported when it is ``[N, 3]`` in ``[0, 1]`` and left out otherwise (an Open3D
    cloud has no feature slot); ``"color"`` insists; ``"none"`` leaves it out.
    """
    o3d = _require("open3d")
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    if points.num_clouds != 1:
        raise ValueError(
            f"an Open3D PointCloud holds one cloud, got {points.num_clouds}; "
            "convert each of points.clouds()"
        )
    if points.pos is None or points.pos.size(1) != 3:
        raise ValueError(f"Open3D needs pos [N, 3], got {getattr(points.pos, 'shape', None)}")
    if x_as == "feature":
        raise ValueError(
            "an Open3D PointCloud cannot hold features; use x_as='auto', 'color' or 'none'"
        )
    color, _ = split_color(points.x, x_as)

    def vec(t: Tensor) -> Any:
        arr = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)
        return o3d.utility.Vector3dVector(arr)

    pcd = o3d.geometry.PointCloud()
    pcd.points = vec(points.pos)
    if color is not None:
        pcd.colors = vec(color)
    normal = points.get("normal")
    if normal is not None:
        pcd.normals = vec(normal)
    return pcd


def from_open3d(pcd: Any, dtype: torch.dtype = torch.float32) -> PointSet:
    """``open3d.geometry.PointCloud`` (legacy) -> ``PointSet``.

    ``points`` -> ``pos [N, 3]``; ``colors`` (if any) -> ``x [N, 3]``; ``normals`` (if any)
    -> ``normal [N, 3]``; all in ``dtype``.
    """
    if not all(hasattr(pcd, a) for a in ("points", "has_colors", "has_normals")):
        raise ValueError(f"expected an open3d.geometry.PointCloud, got {type(pcd).__name__}")

    def tensor(v: Any) -> Tensor:
        return torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1, 3).copy()).to(dtype)

    attrs: dict[str, Any] = {"pos": tensor(pcd.points)}
    if pcd.has_colors():
        attrs["x"] = tensor(pcd.colors)
    if pcd.has_normals():
        attrs["normal"] = tensor(pcd.normals)
    return PointSet(**attrs)


def to_pytorch3d(points: PointSet) -> Any:
    """``PointSet`` (batched or not) -> ``pytorch3d.structures.Pointclouds``.

    One pytorch3d cloud per point-set cloud: ``pos`` -> points, ``x`` -> features,
    ``normal`` -> normals. Tensors stay on their device.
    """
    structures = _require("pytorch3d.structures")
    if not isinstance(points, PointSet):
        raise ValueError(f"points must be a PointSet, got {type(points).__name__}")
    if points.pos is None or points.pos.size(1) != 3:
        raise ValueError(f"pytorch3d needs pos [N, 3], got {getattr(points.pos, 'shape', None)}")
    sizes = points.cloud_sizes().tolist()
    pos = list(points.pos.split(sizes))
    feats = list(points.x.split(sizes)) if points.x is not None else None
    normal = points.get("normal")
    normals = list(normal.split(sizes)) if normal is not None else None
    return structures.Pointclouds(points=pos, normals=normals, features=feats)


def from_pytorch3d(pointclouds: Any) -> PointSet:
    """``pytorch3d.structures.Pointclouds`` -> batched ``PointSet`` (a PyG ``Batch``).

    Per cloud: points -> ``pos``, features -> ``x``, normals -> ``normal``.
    """
    if not hasattr(pointclouds, "points_list"):
        raise ValueError(
            f"expected a pytorch3d.structures.Pointclouds, got {type(pointclouds).__name__}"
        )
    pos = pointclouds.points_list()
    if len(pos) == 0:
        raise ValueError("the Pointclouds object holds no clouds")
    feats = pointclouds.features_list()
    normals = pointclouds.normals_list()
    sizes = [p.size(0) for p in pos]
    return batch_from_packed(
        sizes,
        pos=torch.cat(pos),
        x=torch.cat(feats) if feats is not None else None,
        normal=torch.cat(normals) if normals is not None else None,
    )
