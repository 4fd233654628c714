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


def write_shapenetpart_normals(folder: Path, per_split: dict | None = None, seed: int = 0) -> Path:
    """The normals release of ShapeNetPart under ``folder``: ``synsetoffset2category.txt``,
    one ``<synset>/<token>.txt`` (``x y z nx ny nz part`` rows) per shape and the three
    ``train_test_split`` lists. ``per_split`` maps split -> list of (category id, points)."""
    import json

    from pointset.datasets.shapenetpart import CATEGORIES, SYNSETS, category_parts

    per_split = per_split or {
        "train": [(0, 40), (4, 37), (10, 50)],
        "val": [(1, 30)],
        "test": [(0, 33), (15, 45)],
    }
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synsetoffset2category.txt").write_text(
        "".join(f"{name.capitalize()}\t{synset}\n" for name, synset in zip(CATEGORIES, SYNSETS))
    )
    (folder / "train_test_split").mkdir(exist_ok=True)
    count = 0
    for split, shapes in per_split.items():
        entries = []
        for category, points in shapes:
            token = f"shape{count:04d}"
            count += 1
            parts = category_parts(category)
            xyz = rng.uniform(-1, 1, size=(points, 3))
            normals = rng.normal(size=(points, 3))
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            labels = parts.start + np.arange(points) % len(parts)
            rows = np.concatenate([xyz, normals, labels[:, None]], axis=1)
            (folder / SYNSETS[category]).mkdir(exist_ok=True)
            np.savetxt(folder / SYNSETS[category] / f"{token}.txt", rows, fmt="%.6f")
            entries.append(f"shape_data/{SYNSETS[category]}/{token}")
        listing = folder / "train_test_split" / f"shuffled_{split}_file_list.json"
        listing.write_text(json.dumps(entries))
    return folder


def write_shapenetpart_h5(
    folder: Path, n: int = 4, points: int = 64, normals: bool = False, seed: int = 0
) -> Path:
    """PointNet's hdf5 release of ShapeNetPart under ``folder``: ``ply_data_<split>0.h5``
    (``data``, ``label [n, 1]``, ``pid``; ``normal`` when asked) and the three
    ``<split>_hdf5_file_list.txt`` lists."""
    from pointset.datasets.shapenetpart import category_parts

    rng = np.random.default_rng(seed)
    for i, split in enumerate(("train", "val", "test")):
        category = (np.arange(n) * 5 + i) % 16
        pid = np.stack(
            [category_parts(c).start + np.arange(points) % len(category_parts(c)) for c in category]
        )
        arrays = dict(
            data=rng.uniform(-1, 1, size=(n, points, 3)).astype(np.float32),
            label=category[:, None].astype(np.uint8),
            pid=pid.astype(np.uint8),
        )
        if normals:
            arrays["normal"] = rng.normal(size=(n, points, 3)).astype(np.float32)
        write_h5(folder / f"ply_data_{split}0.h5", **arrays)
        (folder / f"{split}_hdf5_file_list.txt").write_text(f"ply_data_{split}0.h5\n")
    return folder
