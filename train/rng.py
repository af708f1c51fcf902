"""Random numbers that make a run reproducible, resumable and independent of the device count.

Every random quantity of a training step that belongs to a sample (its latent z, the noise
maps of its synthesis layers, its augmentation parameters, its gradient-penalty mix, its label
noise) is drawn by `BatchRandom` for the whole global batch from one generator that all ranks
seed alike, and each device keeps only its own rows. Each phase of a step snapshots the
generator and replays it for every accumulation round, so sample j of the global batch gets
the same numbers whether the batch is computed by 1 device in 4 rounds or 4 devices in 1. The
cost is drawing B rows where b are used; next to a forward pass it is negligible.

`capture_rng` / `restore_rng` save and restore every generator (this one, torch's CPU and
CUDA defaults, Python's and NumPy's) in a form `torch.load(weights_only=True)` accepts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class BatchRandom:
    """Per-sample random tensors for this device's `rows` of a global batch of `batch`."""

    def __init__(self, generator: torch.Generator, batch: int, rows: slice,
                 device: torch.device) -> None:
        self.generator = generator
        self.batch = batch
        self.rows = rows
        self.device = device

    @property
    def n(self) -> int:
        """Rows this device gets."""
        return self.rows.stop - self.rows.start

    def _draw(self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        full = fn((self.batch, *shape), generator=self.generator, device=self.device)
        return full[self.rows]

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal, shape (rows, *shape)."""
        return self._draw(torch.randn, shape)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1), shape (rows, *shape)."""
        return self._draw(torch.rand, shape)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """The run's per-sample generator (on the training device: no host round trip)."""
    return torch.Generator(device=device).manual_seed(seed)


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every generator's state, as tensors and plain Python values."""
    np_state = np.random.get_state()
    version, keys, pos, has_gauss, cached = np_state  # type: ignore[misc]
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "batch": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [version, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of `capture_rng`."""
    generator.set_state(state["batch"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    nv, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((nv, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
