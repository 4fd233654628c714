"""Fixtures of the dataset tests: tiny files in the real layouts, written to ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_files import write_scanobjectnn


@pytest.fixture
def scanobjectnn_root(tmp_path: Path) -> Path:
    return write_scanobjectnn(tmp_path / "scanobjectnn")
