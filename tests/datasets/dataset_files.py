"""Writers of tiny h5 files in the real ScanObjectNN / ModelNet40 layouts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pointset.datasets import scanobjectnn_files


def random_clouds(n: int, points: int, num_classes: int, seed: int = 0):
    """``data [n, points, 3]`` float32, ``label [n]`` uint8 (all classes while n allows)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, points, 3)).astype(np.float32)
    label = (np.arange(n) % num_classes).astype(np.uint8)
    return data, label


def write_h5(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def write_scanobjectnn(root: Path, variant: str = "PB_T50_RS", n: int = 6, points: int = 2048):
    """Both splits of ``variant`` under ``root`` (keys data, label, mask)."""
    for split, rel in scanobjectnn_files(variant).items():
        data, label = random_clouds(n, points, 15, seed=0 if split == "train" else 1)
        mask = np.where(np.arange(points) % 5 == 0, -1, 0)[None].repeat(n, 0).astype(np.int32)
        write_h5(root / rel, data=data, label=label, mask=mask)
    return root


def write_modelnet40(folder: Path, shards: int = 2, n: int = 4, points: int = 2048) -> Path:
    """``ply_data_{train,test}{i}.h5`` (label ``[n, 1]``) and ``shape_names.txt``."""
    from pointset.datasets.modelnet40 import CLASS_NAMES

    for split in ("train", "test"):
        for i in range(shards):
            data, label = random_clouds(n, points, 40, seed=10 * i + (split == "test"))
            label = (label + 7 * i).astype(np.uint8)[:, None]
            write_h5(folder / f"ply_data_{split}{i}.h5", data=data, label=label)
    (folder / "shape_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return folder
