"""Small StyleGAN-format dataset zips made from scratch, for tests, benchmarks and smoke runs.

`write_dataset_zip` encodes arrays to PNG and hands them to the pipeline's exporter
(`core.datasetzip`, the layout NVIDIA's dataset_tool writes: `00000/img00000000.png`,
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
import torch
from PIL import Image

from core.datasetzip import write_dataset_zip as _write_png_zip
from train.presets import PRESETS, merge


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_dataset_zip(path: Path, images: Iterable[np.ndarray],
                      labels: Sequence[int] | None = None) -> Path:
    """Write HWC uint8 RGB `images` (and optional class labels) as a StyleGAN-format zip,
    through the pipeline's own exporter (core/datasetzip.py)."""
    return _write_png_zip(Path(path), (_png(im) for im in images),
                          None if labels is None else list(labels)).path


#: Shapes of the labelled toy classes, in class order (class k: shape k, hue band k).
CLASS_SHAPES = ("ellipse", "square", "diamond", "ring")


def _shape_alpha(shape: str, dx: np.ndarray, dy: np.ndarray, sharpness: float) -> np.ndarray:
    """Soft coverage of a unit shape at offsets (dx, dy) in units of its radius."""
    if shape == "square":
        d = np.maximum(np.abs(dx), np.abs(dy)) ** 2
    elif shape == "diamond":
        d = (np.abs(dx) + np.abs(dy)) ** 2
    elif shape == "ring":
        d = ((np.sqrt(dx**2 + dy**2) - 0.7) / 0.3) ** 2
    else:
        d = dx**2 + dy**2
    return np.clip((1.0 - d) * sharpness, 0, 1)[..., None]


def blob_images(n: int, resolution: int, seed: int = 0,
                labels: Sequence[int] | None = None, classes: int = 0) -> list[np.ndarray]:
    """`n` toy images (see module doc), deterministic in `seed`; with `labels`, image i is
    drawn in class labels[i] of `classes`: its own shape and a band of hues of its own, so a
    glance (or a tiny classifier) tells the classes apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / resolution
    out = []
    for i in range(n):
        top, bottom = rng.uniform(0.55, 0.95, 3), rng.uniform(0.3, 0.7, 3)
        background = top[None, None] * (1 - yy[..., None]) + bottom[None, None] * yy[..., None]
        cx, cy = rng.uniform(0.3, 0.7, 2)
        rx = rng.uniform(0.12, 0.3)
        ry = rx * rng.uniform(0.6, 1.6)
        hue = rng.uniform(0, 1)
        shape = "ellipse"
        if labels is not None:
            k = int(labels[i])
            shape = CLASS_SHAPES[k]
            hue = (k + 0.5 * hue) / classes  # half of class k's band, a gap to the next
            ry = rx * (0.8 + 0.4 * (ry / rx - 0.6))  # near-square aspect: shapes stay readable
        colour = 0.5 + 0.45 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
        alpha = _shape_alpha(shape, (xx - cx) / rx, (yy - cy) / ry, resolution * 0.08)
        image = background * (1 - alpha) + colour[None, None] * alpha
        out.append((image * 255).round().clip(0, 255).astype(np.uint8))
    return out


def make_blob_dataset(path: Path, n: int, resolution: int, seed: int = 0,
                      classes: int = 0) -> Path:
    """A toy dataset zip of `n` images at `resolution` px; with `classes` >= 2, labelled,
    in blocks of equal size, as `curate prepare --combined` orders them."""
    labels = [i * classes // n for i in range(n)] if classes else None
    return write_dataset_zip(path, blob_images(n, resolution, seed, labels, classes), labels)


#: Networks small enough to train a few steps in seconds on one CPU core (tests, benchmarks).
TINY_MODELS: dict[str, dict[str, Any]] = {
    "dcgan": {"z_dim": 16, "channels": 8, "max_channels": 32},
    "wgan_gp": {"z_dim": 16, "channels": 8, "max_channels": 32, "n_critic": 2},
    "stylegan2": {"z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 256,
                  "channel_max": 32, "mbstd_group": 2, "r1_interval": 2, "pl_interval": 2},
    "biggan": {"z_dim": 20, "shared_dim": 8, "channels": 4, "attention": 8},
}


def toy_classifier(resolution: int, classes: int, images: int = 1024) -> torch.nn.Module:
    """A small CNN trained on labelled toy images (seed 1, not the training set's seed 0) to
    tell the classes apart: the judge of whether a conditional generator draws the class it
    is asked for. Raises RuntimeError when it is itself unreliable (held-out accuracy < 0.95)."""
    labels = [i * classes // images for i in range(images)]
    x = torch.from_numpy(np.stack(blob_images(images, resolution, 1, labels, classes)))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.tensor(labels)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(images, generator=gen)
    fit, held = order[: images * 3 // 4], order[images * 3 // 4:]
    clf = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, classes))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        opt = torch.optim.Adam(clf.parameters(), 3e-3)
        for _ in range(8):
            shuffled = fit[torch.randperm(len(fit), generator=gen)]
            for i in range(0, len(fit), 32):
                batch = shuffled[i:i + 32]
                loss = torch.nn.functional.cross_entropy(clf(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
    clf.eval()
    with torch.no_grad():
        accuracy = float((clf(x[held]).argmax(1) == y[held]).float().mean())
    if accuracy < 0.95:
        raise RuntimeError(f"the toy classifier is unreliable (held-out accuracy {accuracy:.2f})")
    return clf


def label_accuracy(G: Any, classifier: torch.nn.Module, samples: int = 200) -> float:
    """Share of a conditional generator's samples that `classifier` puts in the class they
    were asked for (classes alternate over seeds 0..samples-1)."""
    from train.visuals import class_vectors, generate, latents

    device = next(G.parameters()).device
    wanted = [i % G.classes for i in range(samples)]
    images = generate(G, latents(range(samples), G.z_dim, device),
                      c=class_vectors(wanted, G.classes, device))
    with torch.no_grad():
        predicted = classifier(images.float() / 127.5 - 1).argmax(1)
    return float((predicted == torch.tensor(wanted)).float().mean())


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
    return merge(cfg, overrides)


def tiny_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Preset `name` shrunk to a seconds-long CPU run: its recipe (losses, optimiser, label
    tricks, schedules) kept, its networks, resolution, batch and length made tiny (a batch
    the preset splits by accumulation stays split)."""
    preset = PRESETS[name].settings
    model = preset["model"]
    cfg = tiny_config(model, preset=name, resolution=None, mirror=preset.get("mirror", True))
    if preset.get("batch_per_device"):
        cfg["batch_per_device"] = cfg["batch"] // 2
    if model == "stylegan2":  # the preset's own minibatch-std group may exceed the batch
        cfg["stylegan2"]["mbstd_group"] = 2
    del cfg["model"]
    return merge(cfg, overrides)
