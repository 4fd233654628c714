"""Shared test fixtures.

Tests that read the reference material beside the checkout (``../shared``) use the
``shared_dir`` fixture, which skips them cleanly when that folder is absent (a user's
checkout has none). ``POINTSET_SHARED`` overrides the location.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Triton reads TRITON_INTERPRET when a kernel or its own standard library is decorated,
# i.e. when triton is first imported; set it before any test module can import triton, so
# the tests of the "triton" backend run its kernels on CPU through the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("POINTSET_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` reference folder; skips the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"reference folder {SHARED_DIR} is absent")
    return SHARED_DIR


@pytest.fixture
def check_counter(monkeypatch) -> dict:
    """Count calls of ``check_points`` / ``check_batch`` wherever pointset imported them
    (a dict ``{"check_points": n, "check_batch": n}`` updated as the test runs; its
    ``checked`` attribute lists ``(name, tensor)`` for every call, in order)."""
    import pointset._checks as checks

    class Calls(dict):
        checked: list

    calls = Calls(check_points=0, check_batch=0)
    calls.checked = []
    for name in list(calls):
        original = getattr(checks, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            calls.checked.append((_name, args[0] if args else None))
            return _original(*args, **kwargs)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("pointset") and (
                getattr(module, name, None) is original
            ):
                monkeypatch.setattr(module, name, spy)
    return calls
