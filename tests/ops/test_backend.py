"""Tests for the dispatch rule in ``pointset.ops._backend`` as the FPS and kNN ops use it.

Oracle: the rule written in the ``_backend`` module docstring (explicit argument, then
``use_backend``, then the first usable entry of the op's ``auto`` list), observed through
spies installed in the ops' implementation tables.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import pointset.ops as ops
from pointset.ops import _backend
from pointset.ops._backend import BackendUnavailableError, select, use_backend

# ``pointset.ops.fps`` is the function; the modules holding the tables come from sys.modules.
fps_module = importlib.import_module("pointset.ops.fps")
knn_module = importlib.import_module("pointset.ops.knn")
radius_module = importlib.import_module("pointset.ops.radius")


def first_installed(names):
    return next(name for name in names if ops.is_available(name))


@pytest.fixture
def calls(monkeypatch):
    """Wrap every FPS and kNN implementation so the backend that ran is recorded."""
    seen: list[str] = []
    for module in (fps_module, knn_module):
        for name, impl in list(module._IMPLS.items()):

            def spy(*args, _name=name, _impl=impl, **kwargs):
                seen.append(_name)
                return _impl(*args, **kwargs)

            monkeypatch.setitem(module._IMPLS, name, spy)
    return seen


def test_backend_argument_wins(calls):
    """backend= runs that implementation, also inside use_backend."""
    pos = torch.rand(50, 3)
    ops.fps(pos, num=5, backend="native")
    with use_backend("open3d"):
        ops.knn(pos, pos, 3, backend="native")
    assert calls == ["native", "native"]


def test_use_backend_forces_ops_that_implement_it(calls):
    """use_backend('scipy') forces kNN; FPS has no scipy backend and falls back to auto."""
    pos = torch.rand(50, 3)
    with use_backend("scipy"):
        ops.knn(pos, pos, 3)
        ops.fps(pos, num=5)
    expected_fps = fps_module.auto(pos.device, pos.dtype, False)[0]
    assert calls == ["scipy", expected_fps]
    with use_backend("native"):
        ops.knn(pos, pos, 3)
        with use_backend(None):
            ops.knn(pos, pos, 3)
    assert calls[2:] == ["native", first_installed(knn_module.auto(pos.device, 3))]


def test_auto_takes_the_first_usable_entry(calls, monkeypatch):
    """Automatic choice follows the op's auto list, skipping uninstalled backends."""
    pos = torch.rand(50, 3)
    ops.knn(pos, pos, 3)
    assert calls == [first_installed(knn_module.auto(pos.device, 3))]
    monkeypatch.setattr(knn_module, "auto", lambda *args: ("pytorch3d", "scipy", "native"))
    monkeypatch.setattr(_backend, "is_available", lambda name: name not in ("pytorch3d", "scipy"))
    ops.knn(pos, pos, 3)
    assert calls[1:] == ["native"]


def test_auto_rules_documented_in_the_modules():
    """The rules stated in the fps / knn module docstrings."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fps_module.auto(cpu, torch.float32, True) == ("numba", "native")
    assert fps_module.auto(cpu, torch.float32, False) == ("numba", "native")
    assert fps_module.auto(cpu, torch.float64, True) == ("numba", "native")
    assert fps_module.auto(cuda, torch.float32, False)[-1] == "native"
    assert knn_module.auto(cpu, 3) == ("numba", "open3d", "scipy", "native")
    assert knn_module.auto(cpu, dim=5) == ("open3d", "scipy", "native")
    assert radius_module.auto(cpu, None, None, 3)[0] == "numba"
    assert knn_module.auto(cuda, 3)[-1] == "native"
    for rule in (fps_module.auto(cuda, torch.float32, True), knn_module.auto(cuda, 1)):
        assert not set(rule) & _backend.CPU_ONLY


def test_unknown_backend_name():
    """An unknown name is refused by the argument and by use_backend, listing valid ones."""
    with pytest.raises(ValueError, match="unknown backend 'fast'; valid backends are native"):
        ops.fps(torch.rand(5, 3), num=2, backend="fast")
    with pytest.raises(ValueError, match="unknown backend 'kdtree'"), use_backend("kdtree"):
        pass


def test_backend_that_does_not_implement_the_op():
    """scipy has no FPS; forcing it through the argument names the backends that do."""
    with pytest.raises(ValueError, match="backend 'scipy' does not implement fps; backends"):
        ops.fps(torch.rand(5, 3), num=2, backend="scipy")


def test_uninstalled_backend_gives_install_hint(monkeypatch):
    """A backend that does not import raises BackendUnavailableError with a hint."""
    _backend._import_error.cache_clear()
    monkeypatch.setitem(_backend._MODULES, "open3d", "no_such_module_for_pointset_tests")
    try:
        with pytest.raises(BackendUnavailableError, match="Install it with: pip install"):
            ops.knn(torch.rand(5, 3), torch.rand(2, 3), 1, backend="open3d")
        assert not ops.is_available("open3d")
    finally:
        _backend._import_error.cache_clear()


@pytest.mark.parametrize("device", ["cuda", "meta"])
def test_cpu_only_backend_refuses_other_devices(device):
    """fpsample / scipy / open3d refuse non-CPU tensors; auto skips them there."""
    dev = torch.device(device)
    for op, impls in (("fps", fps_module._IMPLS), ("knn", knn_module._IMPLS)):
        for name in sorted(_backend.CPU_ONLY & set(impls)):
            if not ops.is_available(name):
                continue
            with pytest.raises(ValueError, match=f"backend '{name}' runs on CPU only"):
                select(op, impls, dev, name, lambda: ("native",))
    chosen, _ = select("knn", knn_module._IMPLS, dev, None, lambda: ("scipy", "open3d", "native"))
    assert chosen == "native"


def test_cpu_only_backends_run_on_cpu_tensors():
    """Control for the test above: forced CPU-only backends run on CPU tensors."""
    pos = torch.rand(40, 3)
    for name in ("fpsample", "open3d"):
        if ops.is_available(name):
            assert ops.fps(pos, num=4, backend=name).tolist() == ops.fps(pos, num=4).tolist()
    if ops.is_available("scipy"):
        assert torch.equal(ops.knn(pos, pos, 2, backend="scipy"), ops.knn(pos, pos, 2))
