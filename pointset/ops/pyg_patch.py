"""A switch that runs PyTorch Geometric's point operators on pointset.

PyG 2.8 dispatches ``fps``, ``knn``, ``knn_graph``, ``radius``, ``radius_graph``,
``nearest`` and ``voxel_grid`` (and everything built on them: ``knn_interpolate``, the
``KNNGraph`` / ``RadiusGraph`` transforms, ``EdgeConv``-style layers) to the custom ops
``torch.ops.pyg.{fps, knn, radius, nearest, grid_cluster}`` of the ``pyg-lib`` package, and
raises ``ImportError`` while ``torch_geometric.typing.WITH_KNN`` (``WITH_FPS``,
``WITH_RADIUS``, ``WITH_NEAREST``, ``WITH_GRID_CLUSTER``) is false - the state of a plain
``pip install torch_geometric``. Older PyG (2.3-2.7) called a ``torch_cluster`` module held
by ``torch_geometric.nn.pool`` instead, guarded by ``WITH_TORCH_CLUSTER``.

:func:`patch_pyg` fills whichever of these is missing with pointset:

* it defines the missing ``pyg::`` ops with pyg-lib's schemas, implemented by
  :mod:`pointset.ops.torch_cluster_compat` (any device), and sets their ``WITH_*`` flags;
* on a PyG that holds a ``torch_cluster`` module attribute set to ``None``, it puts
  :mod:`~pointset.ops.torch_cluster_compat` there.

Ops that an installed ``pyg-lib`` (or ``torch-cluster``) already provides are left alone.
:func:`unpatch_pyg` restores PyG's flags and module attributes, so PyG is back in its own
state (the ops stay defined but unused: PyTorch has no public way to remove an op);
:func:`pyg_on_pointset` does both around a block::

    import pointset.ops as ops
    from torch_geometric.nn import knn_graph

    ops.patch_pyg()               # from here on PyG's knn_graph runs on pointset
    edge_index = knn_graph(pos, k=16, batch=batch)
    ops.unpatch_pyg()             # back to PyG's own state

    with ops.pyg_on_pointset():   # the same, for one block
        edge_index = knn_graph(pos, k=16, batch=batch)

The answers are pointset's (see :mod:`~pointset.ops.torch_cluster_compat` for where they
differ from torch-cluster's: lowest-index ties, lowest-index radius truncation, exact FPS
sample counts).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import torch
from torch import Tensor

from . import torch_cluster_compat as compat
from ._clouds import Clouds
from ._radius_search import truncate

#: pyg-lib's schemas of the ops PyG calls (``pyg::<name>``), and the ``WITH_*`` flag of each.
SCHEMAS = {
    "fps": "fps(Tensor src, Tensor ptr, float ratio=0.5, bool random_start=True) -> Tensor",
    "knn": "knn(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, int k=1, "
    "bool cosine=False, int num_workers=1) -> Tensor",
    "radius": "radius(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, "
    "float r=1.0, int max_num_neighbors=32, int num_workers=1, "
    "bool ignore_same_index=False) -> Tensor",
    "nearest": "nearest(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None) -> Tensor",
    "grid_cluster": "grid_cluster(Tensor pos, Tensor size, Tensor? start=None, "
    "Tensor? end=None) -> Tensor",
}
FLAGS = {
    "fps": "WITH_FPS",
    "knn": "WITH_KNN",
    "radius": "WITH_RADIUS",
    "nearest": "WITH_NEAREST",
    "grid_cluster": "WITH_GRID_CLUSTER",
}

#: Modules of older PyG releases that hold ``torch_cluster`` (``None`` when not installed).
_LEGACY_MODULES = ("torch_geometric.nn.pool", "torch_geometric.nn.pool.voxel_grid")

_state: dict | None = None
_LIB: torch.library.Library | None = None
_OURS: set[str] = set()  # ops this module defined


def _batch(ptr: Tensor | None, num: int) -> Tensor | None:
    """A batch vector ``[num]`` from cloud offsets ``ptr: [B + 1]`` (``None`` kept)."""
    if ptr is None:
        return None
    return Clouds.from_ptr(ptr, num).batch


def _batches(x: Tensor, y: Tensor, ptr_x: Tensor | None, ptr_y: Tensor | None):
    """Batch vectors of both sides; a side without ``ptr`` is cloud 0 when the other has one."""
    bx, by = _batch(ptr_x, x.size(0)), _batch(ptr_y, y.size(0))
    if bx is None and by is not None:
        bx = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    if by is None and bx is not None:
        by = torch.zeros(y.size(0), dtype=torch.long, device=y.device)
    return bx, by


def _size(*ptrs: Tensor | None) -> int | None:
    sizes = [p.numel() - 1 for p in ptrs if p is not None]
    return max(sizes) if sizes else None


def _fps(src: Tensor, ptr: Tensor, ratio: float = 0.5, random_start: bool = True) -> Tensor:
    return compat.fps(src, None, ratio, random_start, ptr=ptr.cpu())


def _knn(x, y, ptr_x=None, ptr_y=None, k=1, cosine=False, num_workers=1) -> Tensor:
    bx, by = _batches(x, y, ptr_x, ptr_y)
    return compat.knn(x, y, k, bx, by, cosine, max(1, num_workers), _size(ptr_x, ptr_y))


def _radius(
    x,
    y,
    ptr_x=None,
    ptr_y=None,
    r=1.0,
    max_num_neighbors=32,
    num_workers=1,
    ignore_same_index=False,
) -> Tensor:
    bx, by = _batches(x, y, ptr_x, ptr_y)
    if ignore_same_index:
        # Pairs (i, i) do not count (PyG's radius_graph without loops): ask for one more,
        # drop them, keep the max_num_neighbors lowest indices of every query.
        edge = compat.radius(x, y, r, bx, by, max_num_neighbors + 1, max(1, num_workers))
        edge = edge[:, edge[0] != edge[1]]
        return truncate(edge[0], edge[1], y.size(0), max_num_neighbors)
    return compat.radius(x, y, r, bx, by, max_num_neighbors, max(1, num_workers))


def _nearest(x, y, ptr_x=None, ptr_y=None) -> Tensor:
    return compat.nearest(x, y, _batch(ptr_x, x.size(0)), _batch(ptr_y, y.size(0)))


def _grid_cluster(pos, size, start=None, end=None) -> Tensor:
    return compat.grid_cluster(pos, size, start, end)


#: Implementations of the ops. PyTorch calls a Python kernel without the trailing arguments
#: left at their schema defaults, so each function repeats those defaults.
_IMPLS = {
    "fps": _fps,
    "knn": _knn,
    "radius": _radius,
    "nearest": _nearest,
    "grid_cluster": _grid_cluster,
}


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.pyg, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _define_ops() -> list[str]:
    """Define the ``pyg::`` ops that nothing provides yet (once per process: PyTorch offers
    no public way to remove an op, and the ``WITH_*`` flags decide whether PyG calls it)."""
    global _LIB
    missing = [name for name in SCHEMAS if name not in _OURS and not _has_op(name)]
    if missing and _LIB is None:
        _LIB = torch.library.Library("pyg", "FRAGMENT")
    for name in missing:
        _LIB.define(SCHEMAS[name])
        _LIB.impl(name, _IMPLS[name], "CompositeImplicitAutograd")
        _OURS.add(name)
    return [name for name in SCHEMAS if name in _OURS]


def patch_pyg() -> list[str]:
    """Make PyG's point operators run on pointset where neither pyg-lib nor torch-cluster
    provides them (see the module docstring). Calling it again does nothing.

    Returns:
        What runs on pointset now: ``"pyg::knn"`` and the other ops, and
        ``"torch_cluster"`` for the module attribute of older PyG; empty when PyG needed
        nothing.
    """
    global _state
    if _state is not None:
        return list(_state["installed"])
    typing = importlib.import_module("torch_geometric.typing")
    state = {"installed": [], "flags": {}, "modules": {}}
    for name in _define_ops():
        flag = FLAGS[name]
        if hasattr(typing, flag) and not getattr(typing, flag):
            state["flags"][flag] = False
            setattr(typing, flag, True)
            state["installed"].append(f"pyg::{name}")
    for mod_name in _LEGACY_MODULES:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(mod_name)
            if hasattr(module, "torch_cluster") and module.torch_cluster is None:
                state["modules"][mod_name] = module.torch_cluster
                module.torch_cluster = compat
    if state["modules"]:
        state["installed"].append("torch_cluster")
        for flag in ("WITH_TORCH_CLUSTER", "WITH_TORCH_CLUSTER_BATCH_SIZE"):
            if hasattr(typing, flag) and not getattr(typing, flag):
                state["flags"][flag] = False
                setattr(typing, flag, True)
    _state = state
    return list(state["installed"])


def unpatch_pyg() -> None:
    """Undo :func:`patch_pyg`: restore PyG's ``WITH_*`` flags and module attributes, so PyG
    raises its ``ImportError`` again. Does nothing when PyG is not patched."""
    global _state
    if _state is None:
        return
    typing = importlib.import_module("torch_geometric.typing")
    for flag, value in _state["flags"].items():
        setattr(typing, flag, value)
    for mod_name, value in _state["modules"].items():
        importlib.import_module(mod_name).torch_cluster = value
    _state = None


def is_pyg_patched() -> bool:
    """Whether :func:`patch_pyg` is in effect."""
    return _state is not None


@contextlib.contextmanager
def pyg_on_pointset() -> Iterator[list[str]]:
    """Run PyG's point operators on pointset inside the block (:func:`patch_pyg`), and undo
    it afterwards unless it was already patched. Yields what was installed."""
    was = is_pyg_patched()
    installed = patch_pyg()
    try:
        yield installed
    finally:
        if not was:
            unpatch_pyg()
