"""Download, verify and install the public ScanObjectNN, ModelNet40 and ShapeNetPart releases.

:func:`download` fetches a release archive with the standard library (``urllib``), shows a
progress bar, resumes a partial transfer with an HTTP ``Range`` request, checks the
archive (zip CRCs), unpacks it into a temporary folder inside ``root``, verifies the
unpacked files (expected names, h5 keys, shapes, label range) and only then renames the
dataset folder into place. A corrupt archive or a failed check leaves no dataset folder
behind. The partial archive lives in ``<root>/.downloads/<name>.zip.part``.

=================== ============================== =========================================
name                installs                       archive
=================== ============================== =========================================
scanobjectnn        ``<root>/h5_files`` (PB_T50_RS) PointMLP's release of the hardest variant
scanobjectnn_full   ``<root>/h5_files`` (all)       the official ScanObjectNN archive
modelnet40          ``<root>/modelnet40_ply_hdf5_2048`` PointNet's h5 release
shapenetpart        ``<root>/shapenetcore_partanno_segmentation_benchmark_v0_normal``
                                                   the normals release (official PointMLP)
shapenetpart_h5     ``<root>/hdf5_data``            PointNet's hdf5 part-segmentation release
=================== ============================== =========================================
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ._h5 import check_clouds, read_h5
from .errors import DatasetError
from .modelnet40 import CLASS_NAMES as MODELNET40_CLASSES
from .modelnet40 import FOLDER as MODELNET40_FOLDER
from .scanobjectnn import CLASS_NAMES as SCANOBJECTNN_CLASSES
from .scanobjectnn import VARIANTS, scanobjectnn_files
from .shapenetpart import H5_FOLDER as SHAPENETPART_H5_FOLDER
from .shapenetpart import NORMALS_FOLDER as SHAPENETPART_FOLDER
from .shapenetpart import NUM_PARTS as SHAPENETPART_PARTS
from .shapenetpart import verify_release as verify_shapenetpart


@dataclass(frozen=True)
class Release:
    """A dataset archive: where it is, what folder it installs, what must be in it."""

    url: str
    folder: str  #: installed as ``<root>/<folder>``
    required: tuple[str, ...]  #: files (relative to the folder) that must exist
    h5_glob: str  #: the h5 files to check, relative to the folder
    num_classes: int
    #: replaces the h5 check: ``check(folder) -> files checked``, raising DatasetError
    check: Callable[[Path], list[Path]] | None = None


def _scanobjectnn_required(variants: Iterable[str]) -> tuple[str, ...]:
    return tuple(p for v in variants for p in scanobjectnn_files(v).values())


RELEASES = {
    "scanobjectnn": Release(
        url="https://github.com/ma-xu/pointMLP-pytorch/releases/download/dataset/h5_files.zip",
        folder="h5_files",
        required=_scanobjectnn_required(["PB_T50_RS"]),
        h5_glob="main_split*/*.h5",
        num_classes=len(SCANOBJECTNN_CLASSES),
    ),
    "scanobjectnn_full": Release(
        url="http://hkust-vgd.ust.hk/scanobjectnn/h5_files.zip",
        folder="h5_files",
        required=_scanobjectnn_required(VARIANTS),
        h5_glob="main_split*/*.h5",
        num_classes=len(SCANOBJECTNN_CLASSES),
    ),
    "modelnet40": Release(
        url="https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip",
        folder=MODELNET40_FOLDER,
        required=("ply_data_train0.h5", "ply_data_test0.h5", "shape_names.txt"),
        h5_glob="ply_data_*.h5",
        num_classes=len(MODELNET40_CLASSES),
    ),
    "shapenetpart": Release(
        url="https://shapenet.cs.stanford.edu/media/"
        "shapenetcore_partanno_segmentation_benchmark_v0_normal.zip",
        folder=SHAPENETPART_FOLDER,
        required=(
            "synsetoffset2category.txt",
            "train_test_split/shuffled_train_file_list.json",
            "train_test_split/shuffled_val_file_list.json",
            "train_test_split/shuffled_test_file_list.json",
        ),
        h5_glob="",
        num_classes=SHAPENETPART_PARTS,
        check=lambda folder: verify_shapenetpart(folder, "normals"),
    ),
    "shapenetpart_h5": Release(
        url="https://shapenet.cs.stanford.edu/media/shapenet_part_seg_hdf5_data.zip",
        folder=SHAPENETPART_H5_FOLDER,
        required=("train_hdf5_file_list.txt", "val_hdf5_file_list.txt", "test_hdf5_file_list.txt"),
        h5_glob="",
        num_classes=SHAPENETPART_PARTS,
        check=lambda folder: verify_shapenetpart(folder, "h5"),
    ),
}

_CHUNK = 1 << 16


def _release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"unknown dataset {name!r}; downloadable: {', '.join(RELEASES)}")
    return RELEASES[name]


# -- transfer ----------------------------------------------------------------------------


def _content_range_start(value: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100."""
    try:
        return int(value.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def fetch(url: str, part: Path, progress: bool = True, timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, resuming from its current size.

    Raises:
        DatasetError: the transfer failed or stopped early; the bytes received stay in
            ``part``, so calling again resumes.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "pointset"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: the file is complete
            return
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot reach {url}: {reason}") from exc
    from tqdm.auto import tqdm

    with resp:
        length = resp.headers.get("Content-Length")
        if have and resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise DatasetError(
                    f"{url} answered a resume from byte {have} with bytes from {start}; "
                    "the partial download was removed, run again"
                )
            mode = "ab"
        else:  # a full answer (the server ignored the range): start over
            mode, have = "wb", 0
        total = have + int(length) if length is not None else None
        done = have
        with open(part, mode) as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.split(".")[0],
            disable=not progress, leave=False,
        ) as bar:  # fmt: skip
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DatasetError(
                    f"download of {url} stopped after {done} bytes ({exc}); run again to resume"
                ) from exc
    if total is not None and done < total:
        raise DatasetError(
            f"download of {url} stopped after {done} of {total} bytes; run again to resume"
        )


# -- checks ------------------------------------------------------------------------------


def _check_archive(path: Path, url: str) -> None:
    """Zip structure and CRCs; a bad archive is deleted."""
    problem = None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                problem = f"member {bad} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        problem = str(exc)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise DatasetError(
            f"archive downloaded from {url} is corrupt ({problem}); it was removed, run again"
        )


def _extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, refusing members that would land outside it."""
    dest_abs = dest.resolve()
    with zipfile.ZipFile(archive) as z:
        for member in z.namelist():
            target = (dest / member).resolve()
            if target != dest_abs and dest_abs not in target.parents:
                raise DatasetError(f"archive {archive} has a member outside its folder: {member}")
        z.extractall(dest)


def _find_top(tree: Path, marker: str) -> Path | None:
    """The folder under ``tree`` (itself or up to three levels down, ``__MACOSX`` skipped)
    that holds ``marker``."""
    candidates = [tree]
    for _ in range(4):
        for folder in candidates:
            if (folder / marker).is_file():
                return folder
        candidates = [
            c
            for f in candidates
            for c in sorted(f.iterdir())
            if c.is_dir() and c.name != "__MACOSX"
        ]
    return None


def verify(name: str, folder: str | os.PathLike) -> list[Path]:
    """Check an unpacked release: expected files present, every h5 readable with ``data``
    ``[N, P, 3]`` and ``label`` in range (and ModelNet40's ``shape_names.txt``); the
    ShapeNetPart releases are checked by
    :func:`pointset.datasets.shapenetpart.verify_release`.

    Returns:
        The h5 files checked.

    Raises:
        DatasetError: naming the first problem.
    """
    release, folder = _release(name), Path(folder)
    missing = [r for r in release.required if not (folder / r).is_file()]
    if missing:
        raise DatasetError(
            f"{name} in {folder} is incomplete: {missing[0]} is missing "
            f"({len(missing)} of the {len(release.required)} expected files)"
        )
    if release.check is not None:
        return release.check(folder)
    if release.folder == MODELNET40_FOLDER:
        names = (folder / "shape_names.txt").read_text().split()
        if len(names) != release.num_classes:
            raise DatasetError(
                f"{folder / 'shape_names.txt'} lists {len(names)} classes, expected "
                f"{release.num_classes}"
            )
    files = sorted(folder.glob(release.h5_glob))
    for path in files:
        check_clouds(read_h5(path), path, release.num_classes)
    return files


def is_installed(name: str, root: str | os.PathLike) -> bool:
    """Whether ``<root>/<folder>`` of release ``name`` is present and verifies."""
    folder = Path(root) / _release(name).folder
    if not folder.is_dir():
        return False
    try:
        verify(name, folder)
    except DatasetError:
        return False
    return True


# -- install -----------------------------------------------------------------------------


def _install(staged: Path, target: Path, scratch: Path) -> None:
    """Move ``staged`` to ``target``; an existing ``target`` is swapped out, then removed."""
    old = scratch / "previous"
    if target.exists():
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except OSError:
        if old.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def download(
    name: str,
    root: str | os.PathLike,
    url: str | None = None,
    progress: bool = True,
    force: bool = False,
    retries: int = 3,
) -> Path:
    """Fetch, verify and install dataset ``name`` under ``root``.

    Args:
        name: a key of :data:`RELEASES` (``"scanobjectnn"``, ``"scanobjectnn_full"``,
            ``"modelnet40"``, ``"shapenetpart"``, ``"shapenetpart_h5"``).
        root: data root; the dataset goes to ``root/<release folder>`` (pass ``root`` to
            the dataset class).
        url: another location of the same archive (a mirror).
        progress: show a progress bar on stderr.
        force: download again even when a verified copy is installed.
        retries: how many times an interrupted transfer is resumed before giving up.

    Returns:
        The installed dataset folder.

    Raises:
        DatasetError: unreachable server, transfer failing ``retries + 1`` times (the
            partial file stays, so a new call resumes), corrupt archive (removed), or
            unpacked files that fail :func:`verify` (nothing is installed).
    """
    release = _release(name)
    root = Path(root)
    target = root / release.folder
    if not force and is_installed(name, root):
        return target
    url = url or release.url
    downloads = root / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{name}.zip.part"
    for attempt in range(retries + 1):
        try:
            fetch(url, part, progress)
            break
        except DatasetError:
            if attempt == retries or not part.exists():
                raise
    _check_archive(part, url)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        _extract(part, scratch / "unpacked")
        top = _find_top(scratch / "unpacked", release.required[0])
        if top is None:
            raise DatasetError(
                f"archive from {url} does not contain {release.required[0]}; is it the "
                f"{name} release?"
            )
        verify(name, top)
        _install(top, target, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    part.unlink(missing_ok=True)
    if not any(downloads.iterdir()):
        downloads.rmdir()
    return target
