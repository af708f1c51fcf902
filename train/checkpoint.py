"""Training-state checkpoints: atomic, pruned to the last K, found again by what they belong to.

A checkpoint holds everything an uninterrupted run would still have in memory (networks, EMA,
optimisers, ADA state, counters, every RNG state, the loader position), so resuming from it
continues the exact same trajectory. File names carry the run's identity and progress,
`state-<config hash>-<dataset hash>-<images seen>.pt` (hashes shortened to 12 hex digits), so
the newest checkpoint of this configuration on this dataset is found without opening the
others, and pruning never touches another run's files. The full hashes are also stored inside
and checked on load.

Writes go to a temporary file in the same folder, are fsync'd and renamed, so a kill at any
instant leaves the previous checkpoints intact. Loading uses `weights_only=True`: a checkpoint
is data, never code.

torch is imported only where a checkpoint is written or read: `newest_images` (file names only)
serves `train queue status` and `train manage`, which poll progress and should not pay seconds
of torch import for it.
"""

from __future__ import annotations

import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.atomic import atomic_path, sweep_temp_files

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^state-([0-9a-f]{12})-([0-9a-f]{12})-(\d{12})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (unreadable, or from another configuration)."""


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    config_hash: str
    dataset_hash: str
    images: int


def _parse(path: Path) -> CheckpointFile | None:
    m = _NAME.match(path.name)
    return CheckpointFile(path, m.group(1), m.group(2), int(m.group(3))) if m else None


def newest_images(folder: Path, config_hash: str) -> int | None:
    """Images seen at the newest checkpoint in `folder` written with the training settings of
    `config_hash` (on any dataset), or None; reads file names only."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    found = [f.images for f in map(_parse, map(Path, names))
             if f is not None and f.config_hash == config_hash[:12]]
    return max(found, default=None)


def canonical(obj: Any) -> Any:
    """`obj` rebuilt so that its pickle does not depend on object identity.

    Pickle writes an object again by reference when the same object occurs twice; whether two
    equal strings or tuples are one object differs between a fresh run and a resumed one (whose
    optimizer state came out of a checkpoint). Rebuilt with interned strings and fresh tuples
    and lists, equal states pickle to equal bytes, so a resumed run's checkpoints are
    byte-identical to an uninterrupted run's. Tensors are kept as they are.
    """
    kind = type(obj)
    if kind is str:
        return sys.intern(obj)
    if kind in (dict, OrderedDict):
        out = kind((canonical(k), canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module state dict's versions, read by load_state_dict
            out._metadata = canonical(obj._metadata)
        return out
    if kind is list:
        return [canonical(v) for v in obj]
    if kind is tuple:
        return tuple(canonical(v) for v in obj)
    return obj


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two training states first differ bit for bit (a key path and what differs), or
    None when they are identical: how a resumed or managed run is compared with an
    uninterrupted one."""
    import torch

    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return f"{path}: keys differ"
        found = (first_difference(a[k], b[k], f"{path}/{k}") for k in a)
        return next((d for d in found if d is not None), None)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return f"{path}: lengths differ"
        found = (first_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
        return next((d for d in found if d is not None), None)
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return None if same else f"{path}: tensors differ"
    return None if a == b else f"{path}: {a!r} != {b!r}"


class CheckpointManager:
    """Checkpoints of one run (one config hash, one dataset hash) in `folder`."""

    def __init__(self, folder: Path, config_hash: str, dataset_hash: str, keep: int) -> None:
        self.folder = Path(folder)
        self.config_hash = config_hash
        self.dataset_hash = dataset_hash
        self.keep = keep

    def _all(self) -> list[CheckpointFile]:
        if not self.folder.is_dir():
            return []
        found = (_parse(p) for p in self.folder.iterdir())
        return sorted((f for f in found if f is not None), key=lambda f: f.images)

    def mine(self) -> list[CheckpointFile]:
        """This run's checkpoints, oldest first."""
        return [f for f in self._all() if f.config_hash == self.config_hash[:12]
                and f.dataset_hash == self.dataset_hash[:12]]

    def foreign(self) -> list[CheckpointFile]:
        """Checkpoints of other configurations or datasets (kept, never loaded)."""
        return [f for f in self._all() if f.config_hash != self.config_hash[:12]
                or f.dataset_hash != self.dataset_hash[:12]]

    def path_for(self, images: int) -> Path:
        return self.folder / (f"state-{self.config_hash[:12]}-{self.dataset_hash[:12]}-"
                              f"{images:012d}.pt")

    def save(self, state: dict[str, Any], images: int) -> Path:
        """Write `state` atomically, then delete this run's checkpoints beyond the last K."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        payload = canonical({"format": FORMAT_VERSION, "config_hash": self.config_hash,
                             "dataset_hash": self.dataset_hash, "images": images, **state})
        target = self.path_for(images)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for old in self.mine()[:-self.keep]:
            old.path.unlink(missing_ok=True)
        return target

    def load(self, path: Path, map_location: torch.device | str = "cpu",
             any_dataset: bool = False) -> dict[str, Any]:
        """Read and check one checkpoint; raise CheckpointError when it cannot be used
        (`any_dataset`: one of another dataset may be, see `load_latest_other_data`)."""
        import torch

        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: not a training-state checkpoint of format "
                                  f"{FORMAT_VERSION}")
        if payload["config_hash"] != self.config_hash:
            raise CheckpointError(f"{path}: written with other training settings")
        if payload["dataset_hash"] != self.dataset_hash and not any_dataset:
            raise CheckpointError(f"{path}: written for another dataset")
        return payload

    def load_latest_other_data(self, map_location: torch.device | str = "cpu",
                               warn: Any = None) -> dict[str, Any] | None:
        """The newest usable checkpoint of these settings on another dataset (an earlier
        version of this one, before images were added or removed), or None."""
        others = [f for f in self._all() if f.config_hash == self.config_hash[:12]
                  and f.dataset_hash != self.dataset_hash[:12]]
        for f in sorted(others, key=lambda f: (f.images, f.path.stat().st_mtime), reverse=True):
            try:
                return self.load(f.path, map_location, any_dataset=True)
            except CheckpointError as exc:
                if warn is not None:
                    warn(f"skipping {exc}")
        return None

    def load_latest(self, map_location: torch.device | str = "cpu", warn: Any = None,
                    sweep: bool = True) -> dict[str, Any] | None:
        """The newest usable checkpoint of this run, or None; unreadable ones are skipped.

        `sweep` deletes temporary files of a write that was killed (rank 0 only: others
        must not race with its next write).
        """
        if sweep:
            sweep_temp_files(self.folder)
        for f in reversed(self.mine()):
            try:
                return self.load(f.path, map_location)
            except CheckpointError as exc:
                if warn is not None:
                    warn(f"skipping {exc}")
        return None
