"""Safe loading of official and pointset checkpoints into pointset models.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``: no checkpoint can
run code on load. The usual official layouts are accepted:

* wrapper dictionaries: the weights under ``state_dict``, ``model``, ``net`` (also nested,
  e.g. ``{"model": {"state_dict": ...}}``), beside other entries (epoch, optimizer, ...);
* the training metadata those files carry: ``argparse.Namespace`` arguments (timm scripts),
  numpy scalars (accuracies), yacs ``CfgNode`` configs (AutoFocusFormer); these are
  rebuilt as plain data, never by importing their classes;
* ``module.`` prefixes (``DataParallel`` / ``DistributedDataParallel``) and ``_orig_mod.``
  prefixes (``torch.compile``);
* 1x1 convolutions stored where the model has a linear layer, and the reverse: old Context
  Cluster detection checkpoints keep ``mlp.fc1.weight`` / ``mlp.fc2.weight`` as
  ``[out, in, 1, 1]``; the weights are reshaped, the numbers are unchanged.

Anything else that does not fit raises :class:`CheckpointError` naming the missing,
unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "LoadResult",
    "WRAPPER_KEYS",
    "load_checkpoint",
    "read_state_dict",
]

#: Keys under which checkpoints nest the weights, in the order they are tried.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "net", "model_state_dict")
#: Key prefixes added by training wrappers, removed on load.
STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
_LIST_LIMIT = 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not fit the model.

    Attributes:
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, checkpoint shape, model shape)`` for keys whose shapes differ.
    """

    def __init__(
        self,
        message: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class LoadResult(NamedTuple):
    """What :func:`load_checkpoint` did: keys left at their initial values (only with
    ``strict=False``), checkpoint keys ignored, and keys reshaped between 1x1 conv and
    linear layouts."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    converted_keys: list[str]


# ---------------------------------------------------------------------------------------
# Reading


class _PlainNamespace(dict):
    """Stand-in for pickled objects of training metadata (``argparse.Namespace``, yacs
    ``CfgNode``): keeps their items and attributes as a dictionary, imports nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.update(state)


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a core dependency
        return []
    found: list[Any] = [np.dtype]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            scalar = __import__(module, fromlist=["scalar"]).scalar
        except (ImportError, AttributeError):
            continue
        found.append((scalar, f"{module}.scalar"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


def _metadata_globals() -> list[Any]:
    """Extra classes a weights-only load accepts: plain-data metadata only."""
    return [
        (_PlainNamespace, "argparse.Namespace"),
        # a dict subclass; the weights-only loader fills only real dict types
        (OrderedDict, "yacs.config.CfgNode"),
        *_numpy_globals(),
    ]


def _unpickling_reason(message: str) -> str:
    """The line of torch's weights-only error that names the refused content."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error"):
            rest = line.split(":", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest.split(". ")[0]
        if "GLOBAL" in line:
            return line.rstrip(".")
    return ""


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # 8-byte little-endian header length, then the JSON header.
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {err}") from err
    try:
        with torch.serialization.safe_globals(_metadata_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(str(err))
        if "GLOBAL" not in reason:
            raise CheckpointError(
                f"cannot read checkpoint {str(path)!r}: not a torch.save or safetensors file "
                f"({reason or err})"
            ) from err
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it stores Python objects that a weights-only "
            f"load does not rebuild ({reason}). Loading it "
            "fully could run arbitrary code; re-save its weights with "
            "torch.save(model.state_dict(), ...) or safetensors from a trusted environment."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _unwrap(obj: Any, where: str) -> dict[str, Tensor]:
    trail = where
    for _ in range(8):  # nesting depth of real checkpoints is at most 2
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{trail} is a {type(obj).__name__}, not a state dict")
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            keys = ", ".join(repr(k) for k in list(obj)[:_LIST_LIMIT])
            raise CheckpointError(
                f"{trail} holds no state dict: expected tensors or one of the wrapper keys "
                f"{list(WRAPPER_KEYS)}, found keys [{keys}]"
            )
        obj, trail = obj[key], f"{trail}[{key!r}]"
    raise CheckpointError(f"{trail}: wrappers nested too deeply")


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        if key in out:
            raise CheckpointError(f"key {key!r} appears twice after removing prefixes")
        out[key] = value
    return out


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """The plain ``{key: tensor}`` state dict of a checkpoint file or object.

    Unwraps ``state_dict`` / ``model`` / ``net`` wrappers (nested too) and removes
    ``module.`` / ``_orig_mod.`` prefixes. Files are read on CPU, safely (see the module
    docstring).

    Raises:
        CheckpointError: unreadable file, refused pickle content, or no state dict inside.
    """
    if isinstance(source, (str, os.PathLike)):
        obj, where = _read_file(Path(source)), repr(str(source))
    elif isinstance(source, Mapping):
        obj, where = source, "the checkpoint"
    else:
        raise CheckpointError(
            f"checkpoint must be a path or a mapping, got {type(source).__name__}"
        )
    return _strip_prefixes(_unwrap(obj, where))


# ---------------------------------------------------------------------------------------
# Matching


def _as_conv_or_linear(value: Tensor, target: torch.Size) -> Tensor | None:
    """``value`` reshaped to ``target`` when they differ only by trailing 1x1 kernel dims
    (``[out, in, 1, 1]`` <-> ``[out, in]``); otherwise ``None``."""

    def core(shape: torch.Size) -> tuple[int, ...]:
        dims = list(shape)
        while len(dims) > 2 and dims[-1] == 1:
            dims.pop()
        return tuple(dims)

    if value.dim() != len(target) and core(value.shape) == core(target) and len(core(target)) == 2:
        return value.reshape(target)
    return None


def _format_keys(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    exclude: Iterable[str] = (),
) -> LoadResult:
    """Load a checkpoint into ``model`` (in place).

    Args:
        model: the model to fill.
        source: a ``.safetensors`` / ``torch.save`` file path, or an in-memory checkpoint
            (a state dict or a wrapper dictionary).
        strict: require the checkpoint keys to equal the model keys. With ``False``,
            missing keys keep their values and unexpected keys are ignored (both are
            reported in the result). Shapes must match either way.
        exclude: key prefixes to leave out on both sides, e.g. ``("head.",)`` to load a
            backbone into a model with another number of classes.

    Returns:
        :class:`LoadResult`.

    Raises:
        CheckpointError (ValueError): unreadable or unsafe file, or keys / shapes that do
            not fit; the message lists the missing, unexpected and mis-shaped keys. The
            model is left unchanged in that case.
    """
    exclude = tuple(exclude)
    state = {
        k: v for k, v in read_state_dict(source).items() if not k.startswith(exclude or ("\0",))
    }
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(exclude or ("\0",))}

    converted, mismatched = [], []
    for key, value in list(state.items()):
        if key not in target or value.shape == target[key].shape:
            continue
        reshaped = _as_conv_or_linear(value, target[key].shape)
        if reshaped is None:
            mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            state[key] = reshaped
            converted.append(key)
    # BatchNorm fills a missing ``num_batches_tracked`` itself (older checkpoints lack it).
    missing = [k for k in target if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(_format_keys("missing keys", missing))
        if unexpected:
            parts.append(_format_keys("unexpected keys", unexpected))
        if mismatched:
            parts.append(
                _format_keys(
                    "shape mismatches (key: checkpoint vs model)",
                    [f"{k}: {list(a)} vs {list(b)}" for k, a, b in mismatched],
                )
            )
        name = type(model).__name__
        raise CheckpointError(
            f"checkpoint does not fit {name}; " + "; ".join(parts),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return LoadResult(missing, unexpected, converted)
