"""Fixtures of the engine tests: the tiny config and a shared tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tests" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data root for the tiny config, generated once per session."""
    from pointset.datasets import SyntheticShapes

    root = tmp_path_factory.mktemp("tiny_data")
    SyntheticShapes(root, "train", num_points=64, train_per_class=4, test_per_class=2)
    return root


@pytest.fixture
def restore_threads():
    """The trainer sets torch's thread count from the config; put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class Tiny:
    """The tiny config file and its overrides for a data root and an output folder."""

    path = TINY

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root

    def overrides(self, output_dir: Path, *extra: str) -> list[str]:
        return [f"data.root={self.data_root}", f"output_dir={output_dir}", *extra]

    def config(self, output_dir: Path, *extra: str):
        from pointset.engine import load_config

        return load_config(TINY, self.overrides(output_dir, *extra))


@pytest.fixture
def tiny(tiny_data_root) -> Tiny:
    return Tiny(tiny_data_root)
