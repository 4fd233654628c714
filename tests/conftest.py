"""Shared test fixtures.

Tests that read the reference material beside the checkout (``../shared``) use the
``shared_dir`` fixture, which skips them cleanly when that folder is absent (a user's
checkout has none). ``POINTSET_SHARED`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("POINTSET_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` reference folder; skips the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"reference folder {SHARED_DIR} is absent")
    return SHARED_DIR
