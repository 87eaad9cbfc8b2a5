"""What a checkpoint holds, and how to put it back: model, optimizer, scheduler, every RNG, position.

The data-loader position is just (epoch, batch index) because each epoch's shuffling is a pure
function of (seed, epoch) — see :func:`epoch_permutation` — so no sampler state needs saving.
"""

from __future__ import annotations

import random
from typing import Any

import torch

try:  # numpy is optional: its global RNG is saved and restored only when it is installed
    import numpy as np
except ImportError:  # pragma: no cover - images without numpy
    np = None

STATE_FORMAT = 1


def epoch_permutation(seed: int, epoch: int, n_rows: int) -> torch.Tensor:
    """The row order of one epoch: the same in every process for the same (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_rows, generator=generator)


def capture_rng() -> dict[str, Any]:
    """torch, numpy (when installed), Python and CUDA RNG states, as tensors and plain values."""
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_plain(random.getstate()),
    }
    if np is not None:
        np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        rng["numpy"] = {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    state = rng.get("numpy")
    if state is not None and np is not None:
        np.random.set_state(
            (
                state["kind"],
                state["keys"].numpy().astype(np.uint32),
                state["pos"],
                state["has_gauss"],
                state["cached_gaussian"],
            )
        )
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]
