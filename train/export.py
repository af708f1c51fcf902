"""Export of the EMA generator: a state dict plus a JSON file that rebuilds it.

`export/generator.pt` holds only tensors (loadable with `weights_only=True`);
`export/generator.json` names the architecture and its constructor arguments, the resolution
and latent size, how long it trained and on which dataset (path and content hash), and the
sha256 of the .pt file, checked when loading. Nothing from the training code's config is
needed to sample from an export: `train sample` and `train interpolate` use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from core.atomic import atomic_path, write_text
from core.errors import UserError
from core.store import file_sha256
from train.models import Generator, generator_from_spec

FORMAT_VERSION = 1
STATE_FILE = "generator.pt"
SPEC_FILE = "generator.json"


class ExportError(UserError, ValueError):
    """An export folder that cannot be loaded; the message says what to do."""



def export_generator(G: Generator, folder: Path, info: dict[str, Any]) -> Path:
    """Write `G`'s weights and description into `folder`; return the JSON path."""
    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    weights = folder / STATE_FILE
    with atomic_path(weights) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    spec = {
        "format": FORMAT_VERSION,
        "architecture": G.name,
        "kwargs": G.init_kwargs,
        "resolution": G.resolution,
        "z_dim": G.z_dim,
        "truncation": G.supports_truncation,
        "weights": STATE_FILE,
        "sha256": file_sha256(weights),
        **info,
    }
    write_text(folder / SPEC_FILE, json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return folder / SPEC_FILE


def load_generator(path: Path, device: torch.device | str = "cpu") -> tuple[Generator,
                                                                           dict[str, Any]]:
    """(generator in eval mode, its JSON description) from an export folder or its JSON."""
    path = Path(path)
    spec_path = path / SPEC_FILE if path.is_dir() else path
    if not spec_path.exists():
        raise ExportError(f"{spec_path} not found: pass a folder written by `train fit` "
                          f"(models/NAME/export) or its generator.json")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{spec_path} is not valid JSON ({exc})") from None
    if spec.get("format") != FORMAT_VERSION:
        raise ExportError(f"{spec_path}: unknown export format {spec.get('format')!r}")
    weights = spec_path.parent / spec["weights"]
    if not weights.exists():
        raise ExportError(f"{weights} is missing next to {spec_path.name}")
    if file_sha256(weights) != spec["sha256"]:
        raise ExportError(f"{weights} does not match the sha256 in {spec_path.name} (a partial "
                          f"copy, or files from two different exports)")
    try:
        G = generator_from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{spec_path}: {exc}") from None
    G.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return G.to(device).eval().requires_grad_(False), spec
