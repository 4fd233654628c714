"""``ShapeNetPart``: part segmentation of 16 object categories into 50 parts.

Yi et al., "A Scalable Active Framework for Region Annotation in 3D Shape Collections",
SIGGRAPH Asia 2016 (https://cs.stanford.edu/~ericyi/project_page/part_annotation/). Two
public releases are read:

- the **normals** release ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` (the
  one the official PointMLP code trains on): ``synsetoffset2category.txt`` (category name
  and synset id per line), one folder per synset holding ``<token>.txt`` files with one
  ``x y z nx ny nz part`` row per point (``part`` is the global part id, 0-49), and
  ``train_test_split/shuffled_{train,val,test}_file_list.json`` listing
  ``shape_data/<synset>/<token>``;
- PointNet's **hdf5** release ``hdf5_data``: ``ply_data_{train,val,test}*.h5`` with
  ``data [n, 2048, 3]`` float32, ``label [n, 1]`` (category id, 0-15) and ``pid [n, 2048]``
  (global part id), listed by ``{train,val,test}_hdf5_file_list.txt``. It carries no
  normals unless a file has a ``normal [n, 2048, 3]`` dataset.

Categories are numbered in the standard order (:data:`CATEGORIES`) and part ids are global:
category ``c`` owns the consecutive ids :func:`category_parts` ``(c)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._h5 import read_h5
from .errors import DatasetError

#: The 16 object categories in the standard order (category id = position).
CATEGORIES = (
    "airplane", "bag", "cap", "car", "chair", "earphone", "guitar", "knife", "lamp", "laptop",
    "motorbike", "mug", "pistol", "rocket", "skateboard", "table",
)  # fmt: skip

#: ShapeNet synset id of every category (the folder names of the normals release).
SYNSETS = (
    "02691156", "02773838", "02954340", "02958343", "03001627", "03261776", "03467517",
    "03624134", "03636649", "03642806", "03790512", "03797390", "03948459", "04099429",
    "04225987", "04379243",
)  # fmt: skip

#: Parts per category, in category order (4 + 2 + ... + 3 = 50).
PARTS_PER_CATEGORY = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)

NUM_CATEGORIES = len(CATEGORIES)
NUM_PARTS = sum(PARTS_PER_CATEGORY)

#: First global part id of every category.
PART_OFFSETS = tuple(int(v) for v in np.cumsum((0,) + PARTS_PER_CATEGORY[:-1]))

#: Names of the 50 parts, ``<category>_<local index>``.
PART_NAMES = tuple(
    f"{name}_{i}" for name, count in zip(CATEGORIES, PARTS_PER_CATEGORY) for i in range(count)
)

#: Folders of the two releases.
NORMALS_FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
H5_FOLDER = "hdf5_data"

SPLITS = ("train", "val", "trainval", "test")
FORMATS = ("auto", "normals", "h5")

DOWNLOAD_HINT = "get them with `pointset download shapenetpart --root {root}`"


def category_parts(category: int) -> range:
    """Global part ids of ``category`` (e.g. ``range(0, 4)`` for airplane)."""
    if not 0 <= int(category) < NUM_CATEGORIES:
        raise ValueError(f"category id {category} is outside [0, {NUM_CATEGORIES - 1}]")
    start = PART_OFFSETS[int(category)]
    return range(start, start + PARTS_PER_CATEGORY[int(category)])


def part_category() -> Tensor:
    """``[50]`` int64: the category that owns every global part id."""
    return torch.repeat_interleave(torch.arange(NUM_CATEGORIES), torch.tensor(PARTS_PER_CATEGORY))


def category_part_mask(device: torch.device | str | None = None) -> Tensor:
    """``[16, 50]`` bool: ``mask[c, p]`` is true when part ``p`` belongs to category ``c``."""
    owner = part_category().to(device)
    return owner.unsqueeze(0) == torch.arange(NUM_CATEGORIES, device=device).unsqueeze(1)


def check_part_labels(category: int, parts: np.ndarray, where: str) -> None:
    """Every label of ``parts`` must be a part of ``category`` (raise :class:`DatasetError`)."""
    if not 0 <= category < NUM_CATEGORIES:
        raise DatasetError(
            f"{where}: category id {category} is out of range [0, {NUM_CATEGORIES - 1}]"
        )
    own = category_parts(category)
    bad = (parts < own.start) | (parts >= own.stop)
    if bad.any():
        value = int(parts[np.flatnonzero(bad)[0]])
        owner = f"category {category} ({CATEGORIES[category]}, parts {own.start}-{own.stop - 1})"
        problem = (
            f"is out of range [0, {NUM_PARTS - 1}] ({owner})"
            if not 0 <= value < NUM_PARTS
            else f"is not a part of {owner}"
        )
        raise DatasetError(
            f"{where}: part label {value} {problem}; {int(bad.sum())} bad labels in all"
        )


# -- the normals release -----------------------------------------------------------------


def read_category_file(path: Path) -> dict[str, int]:
    """``synsetoffset2category.txt`` -> ``{synset: category id}``, checked against the
    standard table."""
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    found: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path}:{number}: expected 'Name synset', got {line.strip()!r}")
        name, synset = fields[0].lower(), fields[1]
        if synset not in SYNSETS:
            raise DatasetError(f"{path}:{number}: unknown synset {synset} ({fields[0]})")
        category = SYNSETS.index(synset)
        if name != CATEGORIES[category]:
            raise DatasetError(
                f"{path}:{number}: synset {synset} is {CATEGORIES[category]}, not {fields[0]}"
            )
        found[synset] = category
    if len(found) != NUM_CATEGORIES:
        missing = [CATEGORIES[i] for i, s in enumerate(SYNSETS) if s not in found]
        raise DatasetError(f"{path} lists {len(found)} of 16 categories (missing {missing[0]})")
    return found


def read_split_list(path: Path) -> list[tuple[str, str]]:
    """``shuffled_<split>_file_list.json`` -> ``[(synset, token), ...]``."""
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    try:
        entries = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(entries, list):
        raise DatasetError(f"{path} must hold a JSON list, got {type(entries).__name__}")
    out = []
    for entry in entries:
        parts = str(entry).strip("/").split("/")
        if len(parts) < 2:
            raise DatasetError(f"{path}: entry {entry!r} is not shape_data/<synset>/<token>")
        out.append((parts[-2], parts[-1]))
    return out


def read_shape_txt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shape of the normals release: ``xyz [P, 3]``, ``normals [P, 3]`` float32 and
    ``parts [P]`` int64.

    Raises:
        DatasetError: missing file, a row without 7 numbers (truncated or corrupt file),
            non-finite values or non-integer part labels.
    """
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise DatasetError(f"{path} holds no points")
    for number, row in enumerate(rows, 1):
        if len(row) != 7:
            raise DatasetError(
                f"{path}:{number}: expected 7 numbers 'x y z nx ny nz part', got {len(row)} "
                "(truncated or corrupt file?)"
            )
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path} holds a value that is not a number: {exc}") from exc
    if not np.isfinite(values).all():
        raise DatasetError(f"{path} contains NaN or inf")
    parts = values[:, 6]
    if not np.all(parts == np.round(parts)):
        raise DatasetError(f"{path}: part labels must be integers")
    return (
        values[:, :3].astype(np.float32),
        values[:, 3:6].astype(np.float32),
        parts.astype(np.int64),
    )


def normals_release_shapes(folder: Path, split: str) -> list[tuple[int, Path]]:
    """``[(category id, shape file), ...]`` of ``split`` in the normals release, sorted by
    category then file name (the official loader's order)."""
    synsets = read_category_file(folder / "synsetoffset2category.txt")
    names = ("train", "val") if split == "trainval" else (split,)
    shapes = []
    for name in names:
        listing = folder / "train_test_split" / f"shuffled_{name}_file_list.json"
        for synset, token in read_split_list(listing):
            if synset not in synsets:
                raise DatasetError(f"{listing}: unknown synset {synset} (shape {token})")
            shapes.append((synsets[synset], folder / synset / f"{token}.txt"))
    shapes.sort(key=lambda s: (s[0], s[1].name))
    missing = [p for _, p in shapes if not p.is_file()]
    if missing:
        raise DatasetError(
            f"ShapeNetPart {split} lists {len(shapes)} shapes but {len(missing)} files are "
            f"missing, e.g. {missing[0]} (incomplete download?)"
        )
    return shapes


# -- the hdf5 release --------------------------------------------------------------------


def h5_release_files(folder: Path, split: str) -> list[Path]:
    """The h5 files of ``split`` named by ``<split>_hdf5_file_list.txt`` (``trainval``: both
    lists)."""
    names = ("train", "val") if split == "trainval" else (split,)
    files = []
    for name in names:
        listing = folder / f"{name}_hdf5_file_list.txt"
        if not listing.is_file():
            raise DatasetError(f"{listing} does not exist")
        for line in listing.read_text().split():
            files.append(folder / Path(line).name)
    if not files:
        raise DatasetError(f"the {split} file lists in {folder} name no h5 files")
    return files


def read_h5_shapes(path: Path) -> dict[str, np.ndarray]:
    """One h5 file of the hdf5 release, checked.

    Returns:
        ``xyz [n, P, 3]`` float32, ``category [n]`` int64, ``parts [n, P]`` int64 and, when
        the file has them, ``normals [n, P, 3]`` float32.

    Raises:
        DatasetError: unreadable file, a missing ``data`` / ``label`` / ``pid`` dataset,
            wrong shapes, a category id outside 0-15 or part labels outside the category.
    """
    arrays = read_h5(path, ("data", "label", "pid"), ("normal",))
    data, label, pid = (np.asarray(arrays[k]) for k in ("data", "label", "pid"))
    if data.ndim != 3 or data.shape[2] != 3 or data.shape[0] == 0 or data.shape[1] == 0:
        raise DatasetError(f"{path}: 'data' must have shape [n, P, 3], got {data.shape}")
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.shape != data.shape[:1]:
        raise DatasetError(f"{path}: 'label' must have shape [{data.shape[0]}], got {label.shape}")
    if pid.shape != data.shape[:2]:
        raise DatasetError(f"{path}: 'pid' must have shape {data.shape[:2]}, got {pid.shape}")
    for key, values in (("label", label), ("pid", pid)):
        if not np.issubdtype(values.dtype, np.integer) and not np.all(values == np.round(values)):
            raise DatasetError(f"{path}: '{key}' must hold integers, got dtype {values.dtype}")
    label, pid = label.astype(np.int64), pid.astype(np.int64)
    for i, category in enumerate(label):
        if not 0 <= category < NUM_CATEGORIES:
            raise DatasetError(
                f"{path}: category id {int(category)} of shape {i} ('label') is out of range "
                f"[0, {NUM_CATEGORIES - 1}]"
            )
        check_part_labels(int(category), pid[i], f"{path}: shape {i} ('pid')")
    if not np.isfinite(data).all():
        raise DatasetError(f"{path}: 'data' contains NaN or inf")
    out = {"xyz": data.astype(np.float32), "category": label, "parts": pid}
    if "normal" in arrays:
        normal = np.asarray(arrays["normal"])
        if normal.shape != data.shape:
            raise DatasetError(f"{path}: 'normal' must have shape {data.shape}, got {normal.shape}")
        out["normals"] = normal.astype(np.float32)
    return out


def resolve_release(root: str | os.PathLike, fmt: str = "auto") -> tuple[str, Path]:
    """``("normals" | "h5", folder)`` of the release found in ``root`` (the release folder
    itself or the folder that holds it); the normals release wins under ``"auto"``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = Path(root)
    hint = DOWNLOAD_HINT.format(root=root)
    if not root.is_dir():
        raise DatasetError(f"ShapeNetPart root {root} does not exist; {hint}")
    candidates = {
        "normals": [root / NORMALS_FOLDER, root],
        "h5": [root / H5_FOLDER, root],
    }
    markers = {"normals": "synsetoffset2category.txt", "h5": "train_hdf5_file_list.txt"}
    for kind in ("normals", "h5") if fmt == "auto" else (fmt,):
        for folder in candidates[kind]:
            if (folder / markers[kind]).is_file():
                return kind, folder
    raise DatasetError(
        f"no ShapeNetPart release in {root} (expected {NORMALS_FOLDER}/synsetoffset2category"
        f".txt or {H5_FOLDER}/train_hdf5_file_list.txt); {hint}"
    )


def choose_points(count: int, num_points: int, rng: np.random.Generator, replace: bool) -> Any:
    """Indices of ``num_points`` of ``count`` points: all of them in order when the counts
    match, else a random draw (with replacement when asked or when ``count`` is smaller)."""
    if count == num_points:
        return slice(None)
    return rng.choice(count, num_points, replace=replace or count < num_points)


class ShapeNetPart(Dataset):
    """ShapeNetPart part segmentation (16 categories, 50 parts), either release.

    Items are dicts:

    - ``points [C, N]`` float32: xyz rows first, then the normals when ``use_normals``
      (``C = 6``) else ``C = 3``;
    - ``labels [N]`` int64: global part ids (0-49);
    - ``normals [3, N]`` float32 (only when the release has normals);
    - ``category`` int64 scalar tensor: the object category (0-15).

    PyTorch's default collate stacks them to ``points [B, C, N]``, ``labels [B, N]``,
    ``normals [B, 3, N]`` and ``category [B]``.

    Every item holds ``num_points`` points: a shape with exactly that many keeps all of
    them, any other is resampled by ``numpy.random.Generator.choice`` - with replacement by
    default, as the official PointMLP loader does (its shapes have 2,000-3,000 points).
    The draw is seeded by ``(seed, epoch, index)``, so it is reproducible and changes with
    :meth:`set_epoch`; ``seed=None`` draws fresh points on every access (the official
    behaviour). Coordinates are not normalised (the official recipe uses the stored ones).

    Args:
        root: the release folder or the folder that holds it.
        split: ``"train"``, ``"val"``, ``"trainval"`` (the official training set) or
            ``"test"``.
        num_points: points per item. (default: ``2048``)
        use_normals: put the normals into ``points`` (rows 3-5). (default: ``True``)
        format: ``"auto"`` (the normals release if present, else the hdf5 one),
            ``"normals"`` or ``"h5"``.
        seed: seed of the point draws, or ``None``. (default: ``0``)
        replace: draw with replacement even when a shape has enough points.
            (default: ``True``)
        cache: keep the parsed text files of the normals release in memory.
        transform: called on every item dict, returns one.

    Attributes:
        class_names: the 50 part names; ``category_names``: the 16 categories;
        categories: ``[len]`` int64 category of every shape; ``format``; ``folder``.

    Raises:
        DatasetError: missing or malformed files, with a one-line message (a missing
            ``pid``, a category id above 15, part labels outside the shape's category,
            truncated files, ``use_normals`` on an hdf5 release without normals).
    """

    class_names = PART_NAMES
    category_names = CATEGORIES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        num_points: int = 2048,
        use_normals: bool = True,
        format: str = "auto",
        seed: int | None = 0,
        replace: bool = True,
        cache: bool = True,
        transform: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points!r}")
        self.format, self.folder = resolve_release(root, format)
        self.split, self.num_points, self.use_normals = split, num_points, use_normals
        self.seed, self.replace, self.cache, self.transform = seed, replace, cache, transform
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}
        if self.format == "normals":
            self.shapes = normals_release_shapes(self.folder, split)
            self.has_normals = True
            self.categories = torch.tensor([c for c, _ in self.shapes], dtype=torch.long)
        else:
            self.paths = h5_release_files(self.folder, split)
            parts = [read_h5_shapes(p) for p in self.paths]
            have = [("normals" in p) for p in parts]
            self.has_normals = all(have)
            self._xyz = np.concatenate([p["xyz"] for p in parts])
            self._parts = np.concatenate([p["parts"] for p in parts]).astype(np.int16)
            self._normals = (
                np.concatenate([p["normals"] for p in parts]) if self.has_normals else None
            )
            self.categories = torch.from_numpy(np.concatenate([p["category"] for p in parts]))
        if use_normals and not self.has_normals:
            raise DatasetError(
                f"{self.folder}: this hdf5 release has no 'normal' dataset; pass "
                "use_normals=False or use the normals release "
                f"({NORMALS_FOLDER}, `pointset download shapenetpart`)"
            )

    @property
    def num_classes(self) -> int:
        return NUM_PARTS

    def __len__(self) -> int:
        return int(self.categories.numel())

    def set_epoch(self, epoch: int) -> None:
        """Seed the next draws with ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def _shape(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        if self.format == "h5":
            normals = self._normals[index] if self._normals is not None else None
            return self._xyz[index], normals, self._parts[index]
        if index in self._cache:
            return self._cache[index]
        category, path = self.shapes[index]
        xyz, normals, parts = read_shape_txt(path)
        check_part_labels(category, parts, str(path))
        parts = parts.astype(np.int16)  # 0-49: a quarter of the memory in the cache
        if self.cache:
            self._cache[index] = (xyz, normals, parts)
        return xyz, normals, parts

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} shapes")
        index = index % len(self)
        xyz, normals, parts = self._shape(index)
        seed = None if self.seed is None else [self.seed, self.epoch, index]
        pick = choose_points(len(parts), self.num_points, np.random.default_rng(seed), self.replace)
        xyz_t = torch.from_numpy(np.ascontiguousarray(xyz[pick].T))
        item: dict[str, Tensor] = {
            "points": xyz_t,
            "labels": torch.from_numpy(parts[pick].astype(np.int64)),
            "category": self.categories[index].clone(),
        }
        if normals is not None:
            item["normals"] = torch.from_numpy(np.ascontiguousarray(normals[pick].T))
            if self.use_normals:
                item["points"] = torch.cat([xyz_t, item["normals"]])
        return self.transform(item) if self.transform is not None else item

    def category_counts(self) -> Tensor:
        """``[16]`` number of shapes per category."""
        return torch.bincount(self.categories, minlength=NUM_CATEGORIES)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.split}, {len(self)} shapes x {self.num_points} "
            f"points, {self.format} release, normals={self.use_normals})"
        )


def verify_release(folder: str | os.PathLike, fmt: str) -> list[Path]:
    """Check an unpacked release (``fmt`` ``"normals"`` or ``"h5"``) in ``folder``.

    The normals release: the category file, the three split lists and every listed shape
    file present, and the first shape of every category parsed and its labels checked. The
    hdf5 release: every listed h5 file read and checked.

    Returns:
        The files parsed.

    Raises:
        DatasetError: naming the first problem.
    """
    folder = Path(folder)
    checked: list[Path] = []
    if fmt == "h5":
        for split in ("train", "val", "test"):
            for path in h5_release_files(folder, split):
                read_h5_shapes(path)
                checked.append(path)
        return checked
    if fmt != "normals":
        raise ValueError(f"fmt must be 'normals' or 'h5', got {fmt!r}")
    seen: set[int] = set()
    for split in ("train", "val", "test"):
        for category, path in normals_release_shapes(folder, split):
            if category not in seen:
                seen.add(category)
                check_part_labels(category, read_shape_txt(path)[2], str(path))
                checked.append(path)
    return checked
