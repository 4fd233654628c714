"""Deterministic seeding and RNG-state capture as plain tensors.

Random streams that matter for reproducibility are derived from ``(seed, *keys)`` (e.g. the
data order of epoch ``e`` comes from ``derive_seed(seed, "order", e)``), so a resumed run
draws the same numbers as an uninterrupted one. The global torch / numpy / Python states
are also captured as tensors, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch import Tensor


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``keys`` (stable across runs)."""
    text = "/".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` of ``seed`` and ``keys``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def seed_everything(seed: int, *keys: object) -> None:
    """Seed Python's, numpy's and torch's global generators (all devices)."""
    s = derive_seed(seed, *keys)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def get_rng_state() -> dict[str, Tensor]:
    """Global generator states of torch (CPU and CUDA), numpy and Python, as tensors."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python_version": torch.tensor(version, dtype=torch.int64),
        "python_mt": torch.tensor(mt, dtype=torch.int64),
        "python_gauss": torch.tensor(
            [float("nan") if gauss is None else gauss], dtype=torch.float64
        ),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": torch.tensor(pos, dtype=torch.int64),
        "numpy_gauss": torch.tensor([has_gauss, cached], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def set_rng_state(state: dict[str, Tensor]) -> None:
    """Restore the states captured by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    gauss = float(state["python_gauss"][0])
    random.setstate(
        (
            int(state["python_version"]),
            tuple(int(v) for v in state["python_mt"].tolist()),
            None if gauss != gauss else gauss,
        )
    )
    has_gauss, cached = state["numpy_gauss"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(has_gauss),
            float(cached),
        )
    )
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
