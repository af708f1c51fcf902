"""Small StyleGAN-format dataset zips made from scratch, for tests, benchmarks and smoke runs.

`write_dataset_zip` encodes arrays to PNG and hands them to the pipeline's exporter
(`curate.prepare.export`, the layout NVIDIA's dataset_tool writes: `00000/img00000000.png`,
stored, `dataset.json` with labels or null). `blob_images` draws a learnable toy
distribution: one soft-edged coloured ellipse per image on a two-tone background, with
position, size, hue and aspect varying smoothly, so a GAN that trains makes visible progress
in a few hundred steps at 16-64 px.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.prepare.export import write_dataset_zip as _write_png_zip


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_dataset_zip(path: Path, images: Iterable[np.ndarray],
                      labels: Sequence[int] | None = None) -> Path:
    """Write HWC uint8 RGB `images` (and optional class labels) as a StyleGAN-format zip,
    through the pipeline's own exporter (curate/prepare/export.py)."""
    return _write_png_zip(Path(path), (_png(im) for im in images),
                          None if labels is None else list(labels)).path


def blob_images(n: int, resolution: int, seed: int = 0) -> list[np.ndarray]:
    """`n` toy images (see module doc), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / resolution
    out = []
    for _ in range(n):
        top, bottom = rng.uniform(0.55, 0.95, 3), rng.uniform(0.3, 0.7, 3)
        background = top[None, None] * (1 - yy[..., None]) + bottom[None, None] * yy[..., None]
        cx, cy = rng.uniform(0.3, 0.7, 2)
        rx = rng.uniform(0.12, 0.3)
        ry = rx * rng.uniform(0.6, 1.6)
        hue = rng.uniform(0, 1)
        colour = 0.5 + 0.45 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        alpha = np.clip((1.0 - d) * resolution * 0.08, 0, 1)[..., None]
        image = background * (1 - alpha) + colour[None, None] * alpha
        out.append((image * 255).round().clip(0, 255).astype(np.uint8))
    return out


def make_blob_dataset(path: Path, n: int, resolution: int, seed: int = 0) -> Path:
    """A toy dataset zip of `n` images at `resolution` px."""
    return write_dataset_zip(path, blob_images(n, resolution, seed))


#: Networks small enough to train a few steps in seconds on one CPU core (tests, benchmarks).
TINY_MODELS: dict[str, dict[str, Any]] = {
    "dcgan": {"z_dim": 16, "channels": 8, "max_channels": 32},
    "wgan_gp": {"z_dim": 16, "channels": 8, "max_channels": 32, "n_critic": 2},
    "stylegan2": {"z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 256,
                  "channel_max": 32, "mbstd_group": 2, "r1_interval": 2},
}


def tiny_config(model: str = "dcgan", **overrides: Any) -> dict[str, Any]:
    """A `train:` mapping for a seconds-long run of `model` (overrides merged on top)."""
    cfg: dict[str, Any] = {
        "model": model, "kimg": 0.064, "batch": 8, "loader_workers": 0,
        "tick_kimg": 0.032, "checkpoint_kimg": 0.032, "sample_kimg": 1.0,
        model: dict(TINY_MODELS[model]),
        "ada": {"speed_kimg": 1.0},
        "report": {"grid": [4, 2], "memorisation_samples": 8, "memorisation_reals": 64,
                   "interpolation_seeds": [0, 1, 0], "interpolation_frames": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg
