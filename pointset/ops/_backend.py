"""Backend registry and the one dispatch rule every operator uses.

An operator module keeps its implementations in a dict ``{backend_name: function}`` and an
``auto`` function that returns the backends to try, fastest first, for a given device and
problem size. :func:`select` then picks the implementation:

1. ``backend=`` passed to the operator wins. It must name a known backend that implements the
   operator, is installed, and runs on the tensors' device; otherwise a ``ValueError`` says
   which of these failed.
2. Otherwise a backend forced with :func:`use_backend` is used if it implements the operator
   (operators it does not implement fall through to rule 3). The same checks apply.
3. Otherwise the first backend of ``auto(...)`` that is installed, implemented and runs on
   the device. ``"native"`` (pure PyTorch) is always last, so something always runs.

CPU-only backends are never handed CUDA tensors. The ``"triton"`` backend runs on CUDA;
on CPU it runs only when forced under Triton's interpreter (``TRITON_INTERPRET=1``, for
tests) and ``auto`` never lists it for CPU tensors.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

#: Every backend name an operator may accept in ``backend=``.
BACKENDS = (
    "native",
    "numba",
    "fpsample",
    "scipy",
    "torch_cluster",
    "open3d",
    "pytorch3d",
    "triton",
)

#: Backends that only accept CPU tensors.
CPU_ONLY = frozenset({"numba", "fpsample", "scipy", "open3d"})

_MODULES = {
    "native": "torch",
    "numba": "numba",
    "fpsample": "fpsample",
    "scipy": "scipy.spatial",
    "torch_cluster": "torch_cluster",
    "open3d": "open3d",
    "pytorch3d": "pytorch3d.ops",
    "triton": "triton",
}

_INSTALL_HINT = {
    "numba": "pip install 'pointset[fast]'",
    "fpsample": "pip install 'pointset[fast]'",
    "scipy": "pip install scipy",
    "torch_cluster": "pip install --no-build-isolation torch-cluster",
    "open3d": "pip install 'pointset[open3d]' (Debian/Ubuntu also need: apt-get install libusb-1.0-0)",
    "pytorch3d": "see https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md",
    "triton": "pip install 'pointset[gpu]'",
}

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pointset_forced_backend", default=None
)


class BackendUnavailableError(ValueError):
    """A backend was requested that is not installed or cannot run here."""


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are {', '.join(BACKENDS)}")


@functools.cache
def _import_error(name: str) -> str | None:
    """The reason ``name`` cannot be imported, or ``None`` when it imports."""
    try:
        importlib.import_module(_MODULES[name])
    except Exception as exc:  # a broken install raises more than ImportError
        return f"{type(exc).__name__}: {exc}"
    return None


def is_available(name: str) -> bool:
    """Whether backend ``name`` is installed and imports."""
    _check_name(name)
    return _import_error(name) is None


def backend_version(name: str) -> str | None:
    """The installed version of backend ``name``'s library, or ``None`` if unavailable."""
    if not is_available(name):
        return None
    top = _MODULES[name].split(".")[0]
    module = importlib.import_module(top)
    version = getattr(module, "__version__", None)
    if version is None:
        from importlib import metadata

        dist = {"torch_cluster": "torch-cluster"}.get(name, top)
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
    return str(version)


def available_backends() -> dict[str, str | None]:
    """Map every backend name to its library version, or ``None`` when it is not usable."""
    return {name: backend_version(name) for name in BACKENDS}


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` is unusable (with an install hint), or ``None`` if it is usable."""
    _check_name(name)
    error = _import_error(name)
    if error is None:
        return None
    return f"{error}. Install it with: {_INSTALL_HINT.get(name, 'pip install ' + name)}"


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force backend ``name`` for every operator that implements it inside the block.

    Example::

        >>> import torch, pointset.ops as ops
        >>> with ops.use_backend("native"):
        ...     idx = ops.fps(torch.rand(100, 3), num=10)

    ``use_backend(None)`` restores automatic dispatch inside the block.
    """
    if name is not None:
        _check_name(name)
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def _check_usable(op: str, name: str, impls: Mapping[str, Callable], device: torch.device) -> None:
    _check_name(name)
    if name not in impls:
        raise ValueError(
            f"backend {name!r} does not implement {op}; backends that do: {', '.join(impls)}"
        )
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} for {op} is not usable: {reason}")
    if name in CPU_ONLY and device.type != "cpu":
        raise ValueError(
            f"backend {name!r} runs on CPU only, but {op} got tensors on {device}; "
            f"use backend='native' or 'triton' for {device.type} tensors"
        )
    if name == "triton":
        from ._triton_launch import unusable_reason as triton_reason

        why = triton_reason(device)
        if why is not None:
            raise BackendUnavailableError(f"backend 'triton' cannot run {op} on {device}: {why}")


def select(
    op: str,
    impls: Mapping[str, Callable],
    device: torch.device,
    backend: str | None,
    auto: Callable[[], Sequence[str]],
) -> tuple[str, Callable]:
    """Pick the implementation of ``op`` by the rule in this module's docstring.

    Returns ``(backend_name, function)``.
    """
    if backend is not None:
        _check_usable(op, backend, impls, device)
        return backend, impls[backend]
    forced = _forced.get()
    if forced is not None and forced in impls:
        _check_usable(op, forced, impls, device)
        return forced, impls[forced]
    for name in auto():
        if name not in impls or not is_available(name):
            continue
        if name in CPU_ONLY and device.type != "cpu":
            continue
        if name == "triton" and device.type != "cuda":
            continue
        return name, impls[name]
    return "native", impls["native"]
