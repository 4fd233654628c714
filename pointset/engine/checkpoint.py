"""Checkpoints: safetensors weights, JSON metadata and a companion training-state file.

A checkpoint called ``best`` in ``runs/x`` is three files:

- ``best.safetensors``: the model's ``state_dict`` (loads anywhere, no pickle);
- ``best.json``: metadata (config, epoch, metrics, class names, ...), human readable;
- ``best.state.pt``: what resuming needs (optimizer, schedule, RNG states, history),
  a ``torch.save`` of plain tensors and containers that loads with
  ``torch.load(..., weights_only=True)``.

All three are first written to temporary files, then renamed over the old ones
(``os.replace``), metadata last, so a crash leaves either the old or the new checkpoint.
Every file records the same random ``token``; loading checks that they belong together.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from pointset.data.io import atomic_path

_SUFFIXES = (".safetensors", ".state.pt", ".json")


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


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    prefix: str | os.PathLike,
    weights: dict[str, Tensor],
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> CheckpointPaths:
    """Atomically write a checkpoint.

    Args:
        prefix: path without suffix, e.g. ``runs/demo/last``.
        weights: the model ``state_dict`` (tensors are copied to CPU).
        meta: JSON-serialisable metadata.
        state: training state for resuming (tensors, numbers, strings, lists, dicts);
            ``None`` writes no ``.state.pt`` file.
    """
    paths = CheckpointPaths.of(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(paths.weights)), exist_ok=True)
    token = uuid.uuid4().hex
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    meta = {**meta, "token": token}
    if state is None and os.path.exists(paths.state):
        os.remove(paths.state)  # a stale resume state must not pair with new weights
    with ExitStack() as stack:
        # exits run in reverse: the state and weights are renamed first, the metadata last
        tmp_m = stack.enter_context(atomic_path(paths.meta))
        tmp_w = stack.enter_context(atomic_path(paths.weights))
        save_file(tensors, tmp_w, metadata={"token": token})
        _fsync_file(tmp_w)
        if state is not None:
            tmp_s = stack.enter_context(atomic_path(paths.state))
            torch.save({**state, "token": token}, tmp_s)
            _fsync_file(tmp_s)
        with open(tmp_m, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
    return paths


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(f"checkpoint file {path} does not exist")


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of the checkpoint at ``path`` (prefix or any of its files)."""
    paths = CheckpointPaths.of(path)
    if not os.path.isfile(paths.meta):
        raise _missing(paths.meta)
    try:
        with open(paths.meta, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint metadata {paths.meta} is not valid JSON: {exc}") from None


def _token(path: str) -> str | None:
    with safe_open(path, framework="pt") as f:
        return (f.metadata() or {}).get("token")


def load_weights(path: str | os.PathLike, check: bool = True) -> dict[str, Tensor]:
    """The model ``state_dict`` of the checkpoint at ``path``.

    With ``check`` and a metadata file beside the weights, verifies that both were written
    together.
    """
    paths = CheckpointPaths.of(path)
    if not os.path.isfile(paths.weights):
        raise _missing(paths.weights)
    try:
        weights = load_file(paths.weights)
        token = _token(paths.weights)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"checkpoint weights {paths.weights} are unreadable: {exc}") from None
    if check and os.path.isfile(paths.meta):
        meta_token = load_metadata(paths.meta).get("token")
        if meta_token is not None and token != meta_token:
            raise ValueError(
                f"checkpoint files {paths.weights} and {paths.meta} were not written together "
                "(the run stopped while saving); use the other checkpoint of the run"
            )
    return weights


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The resume state of the checkpoint at ``path`` (loaded with ``weights_only=True``)."""
    paths = CheckpointPaths.of(path)
    if not os.path.isfile(paths.state):
        raise _missing(paths.state)
    state = torch.load(paths.state, map_location="cpu", weights_only=True)
    meta_token = load_metadata(paths.meta).get("token")
    if state.get("token") != meta_token:
        raise ValueError(
            f"checkpoint files {paths.state} and {paths.meta} were not written together "
            "(the run stopped while saving)"
        )
    return state
