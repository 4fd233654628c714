"""Checkpoints: safetensors weights, JSON metadata and a companion training-state file.

A checkpoint called ``best`` in ``runs/x`` is three files:

- ``best.safetensors``: the model's ``state_dict`` (loads anywhere, no pickle);
- ``best.json``: metadata (config, epoch, metrics, class names, ...), human readable;
- ``best.state.pt``: what resuming needs (optimizer, schedule, RNG states, history),
  a ``torch.save`` of plain tensors and containers that loads with
  ``torch.load(..., weights_only=True)``.

Every file records the same random ``token``. A save is a small journal:

1. all files of the new generation are written and synced to temporary files named
   ``.best.safetensors.<token>.tmp`` (and so on) beside the checkpoint;
2. they are renamed over the old ones, weights first, then the state, metadata last.

A crash during step 1 leaves the old checkpoint intact and stray temporary files, which the
next save (or :func:`recover_checkpoint`) deletes. A crash during step 2 leaves weights that
carry the new token next to the remaining temporary files of that token, all complete: the
readers below take those files, and the next save or :func:`recover_checkpoint` finishes
the renames. Either way a checkpoint always reads as one whole generation.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

_SUFFIXES = (".safetensors", ".state.pt", ".json")

#: A temporary file of a checkpoint (or of any atomic write): ``.<name>.<32 hex>.tmp``.
TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.(?P<token>[0-9a-f]{32})\.tmp$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission, ...); the previous
    checkpoint is left as it was."""


@dataclass(frozen=True)
class CheckpointPaths:
    """The three files of one checkpoint."""

    weights: str
    meta: str
    state: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> CheckpointPaths:
        """Paths from a checkpoint prefix (``runs/x/best``) or any of its three files."""
        path = os.fspath(path)
        for suffix in _SUFFIXES:
            if path.endswith(suffix):
                path = path[: -len(suffix)]
                break
        return cls(path + ".safetensors", path + ".json", path + ".state.pt")

    def files(self) -> tuple[str, str, str]:
        """The files in commit order: weights, state, metadata."""
        return (self.weights, self.state, self.meta)


def _temp(path: str, token: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{token}.tmp")


def _temps(paths: CheckpointPaths) -> dict[tuple[str, str], str]:
    """``{(final path, token): temporary path}`` of the temporary files of ``paths``."""
    folder = os.path.dirname(os.path.abspath(paths.weights))
    names = {os.path.basename(p): p for p in paths.files()}
    out = {}
    try:
        entries = os.listdir(folder)
    except OSError:
        return out
    for entry in entries:
        m = TEMP_FILE.match(entry)
        if m and m["name"] in names:
            out[(names[m["name"]], m["token"])] = os.path.join(folder, entry)
    return out


def _weights_token(path: str) -> str | None:
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("token")
    except (SafetensorError, OSError):
        return None


def _meta_token(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("token")
    except (OSError, ValueError, AttributeError):
        return None


def _pending(paths: CheckpointPaths) -> tuple[str, dict[str, str]] | None:
    """The generation whose renames began but did not finish: its token and
    ``{final path: temporary path}`` of the files still to rename."""
    temps = _temps(paths)
    token = _weights_token(paths.weights) if os.path.isfile(paths.weights) else None
    if token is None or (paths.meta, token) not in temps or _meta_token(paths.meta) == token:
        return None
    todo = {p: temps[(p, token)] for p in (paths.state, paths.meta) if (p, token) in temps}
    return token, todo


def _current(paths: CheckpointPaths) -> CheckpointPaths:
    """The files that hold the newest complete generation (read-only: nothing is renamed)."""
    pending = _pending(paths)
    if pending is None:
        return paths
    todo = pending[1]
    return replace(paths, state=todo.get(paths.state, paths.state), meta=todo[paths.meta])


def recover_checkpoint(prefix: str | os.PathLike) -> bool:
    """Finish an interrupted save of the checkpoint ``prefix`` and delete its stray
    temporary files. Returns whether an interrupted save was finished.

    Only the process that writes the checkpoint may call this (the trainer holds the run
    lock of its ``output_dir``).
    """
    paths = CheckpointPaths.of(prefix)
    pending = _pending(paths)
    if pending is not None:
        for final in paths.files():
            if final in pending[1]:
                os.replace(pending[1][final], final)
    for tmp in _temps(paths).values():
        if os.path.exists(tmp):
            os.remove(tmp)
    return pending is not None


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover (folders cannot be opened on Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives new files."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_failure(prefix: str, exc: BaseException) -> CheckpointWriteError:
    text = " ".join(str(exc).split())
    full = getattr(exc, "errno", None) == errno.ENOSPC or any(
        s in text for s in ("No space left", "StorageFull", "unexpected pos", "file write failed")
    )
    reason = "no space left on device" if full else (text or type(exc).__name__)
    return CheckpointWriteError(
        f"cannot save checkpoint {prefix}: {reason}; the previous one is kept"
    )


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no
    ``NaN`` or ``Infinity``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_checkpoint(
    prefix: str | os.PathLike,
    weights: dict[str, Tensor],
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> CheckpointPaths:
    """Atomically write a checkpoint (see the module docstring for the journal).

    Args:
        prefix: path without suffix, e.g. ``runs/demo/last``.
        weights: the model ``state_dict`` (tensors are copied to CPU).
        meta: JSON-serialisable metadata (non-finite floats are stored as ``null``).
        state: training state for resuming (tensors, numbers, strings, lists, dicts);
            ``None`` writes no ``.state.pt`` file.

    Raises:
        CheckpointWriteError: the files could not be written (e.g. the disk is full); the
            previous checkpoint is unchanged and no temporary file is left.
    """
    paths = CheckpointPaths.of(prefix)
    folder = os.path.dirname(os.path.abspath(paths.weights))
    os.makedirs(folder, exist_ok=True)
    recover_checkpoint(prefix)
    token = uuid.uuid4().hex
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    meta = json_safe({**meta, "token": token})
    mode = _umask_mode()
    written: list[tuple[str, str]] = []
    try:
        tmp = _temp(paths.weights, token)
        written.append((tmp, paths.weights))
        save_file(tensors, tmp, metadata={"token": token})
        if state is not None:
            tmp = _temp(paths.state, token)
            written.append((tmp, paths.state))
            torch.save({**state, "token": token}, tmp)
        tmp = _temp(paths.meta, token)
        written.append((tmp, paths.meta))
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True, allow_nan=False)
        for tmp, _ in written:
            os.chmod(tmp, mode)  # safetensors creates its files with mode 0600
            _fsync_file(tmp)
    except (OSError, SafetensorError, RuntimeError) as exc:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise _write_failure(os.fspath(prefix), exc) from None
    if state is None and os.path.exists(paths.state):
        os.remove(paths.state)  # a stale resume state must not pair with new weights
    for tmp, final in written:  # weights, state, metadata: the order _pending relies on
        os.replace(tmp, final)
    _fsync_dir(folder)
    return paths


def _resolve(path: str | os.PathLike, need: str) -> tuple[CheckpointPaths, CheckpointPaths]:
    """The named and the current files of the checkpoint at ``path``; raises when the file
    ``need`` (``weights``, ``meta`` or ``state``) is missing or ``path`` is no checkpoint."""
    given = os.fspath(path)
    named = CheckpointPaths.of(given)
    current = _current(named)
    target = getattr(current, need)
    if os.path.isfile(target):
        return named, current
    base = os.path.basename(given)
    foreign = not given.endswith(_SUFFIXES) and "." in base.lstrip(".")
    if foreign and os.path.isfile(given):
        raise ValueError(
            f"{given} is not a pointset checkpoint: give the prefix of one (runs/x/best) or "
            "its .safetensors/.json file; official weights (.pth) are loaded with "
            "create_model(..., checkpoint=...) or model.checkpoint in a config"
        )
    if os.path.isdir(given):
        raise ValueError(
            f"checkpoint {given} is a folder; give a checkpoint in it, e.g. "
            f"{os.path.join(given, 'best')}"
        )
    if foreign or not os.path.exists(os.path.dirname(target) or "."):
        raise FileNotFoundError(f"checkpoint {given} does not exist")
    raise FileNotFoundError(f"checkpoint file {getattr(named, need)} does not exist")


def _read_meta(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint metadata {path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint metadata {path} is not a JSON object")
    return meta


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of the checkpoint at ``path`` (prefix or any of its files)."""
    return _read_meta(_resolve(path, "meta")[1].meta)


def load_weights(path: str | os.PathLike, check: bool = True) -> dict[str, Tensor]:
    """The model ``state_dict`` of the checkpoint at ``path``.

    With ``check`` and a metadata file beside the weights, verifies that both were written
    together.
    """
    named, current = _resolve(path, "weights")
    try:
        weights = load_file(current.weights)
        token = _weights_token(current.weights)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"checkpoint weights {named.weights} are unreadable: {exc}") from None
    if check and os.path.isfile(current.meta):
        meta_token = _read_meta(current.meta).get("token")
        if meta_token is not None and token != meta_token:
            raise ValueError(
                f"checkpoint files {named.weights} and {named.meta} were not written together "
                "(they were copied or edited separately); use the other checkpoint of the run"
            )
    return weights


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The resume state of the checkpoint at ``path`` (loaded with ``weights_only=True``).

    A truncated, empty or foreign file raises a ``ValueError`` naming it; a file that holds
    anything but tensors and plain containers is refused without running any of it.
    """
    named, current = _resolve(path, "state")
    try:
        state = torch.load(current.state, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"resume state {named.state} holds objects other than tensors and plain "
            "containers and was refused; it was not written by pointset (start over with "
            "--overwrite)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        why = "is empty" if os.path.getsize(current.state) == 0 else "is truncated or damaged"
        raise ValueError(
            f"resume state {named.state} {why} ({type(exc).__name__}); start over with --overwrite"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"resume state {named.state} is not a pointset training state")
    meta_token = _read_meta(current.meta).get("token") if os.path.isfile(current.meta) else None
    if state.get("token") != meta_token:
        raise ValueError(
            f"checkpoint files {named.state} and {named.meta} were not written together "
            "(they were copied or edited separately)"
        )
    return state
