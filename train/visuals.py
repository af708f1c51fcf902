"""Pictures people judge a GAN by: sample grids, truncation sweeps, latent and class
interpolations.

Latents come from seeds, one generator per seed (`latent_for_seed`), so image k of a grid is
the same picture at every snapshot of a run and in `train sample --seeds k`: changes between
snapshots are the model's, not the sampling's. Generation uses the fixed noise buffers and
never touches the training RNGs, so looking at a run does not change it.

Truncation trades variety for typical images. StyleGAN2 pulls w toward the mean w (psi, in
W); models without a mapping network use BigGAN's trick, z drawn from a normal truncated at a
bound (values beyond it are drawn again), so the same seed gives the same picture at every
bound, only more typical. Class-conditional generators draw grid row r in class r mod C
unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.atomic import atomic_path
from train.data import to_uint8
from train.models.base import Generator, one_hot


def latent_for_seed(seed: int, z_dim: int, bound: float = 0.0) -> torch.Tensor:
    """The latent of `seed` (float32 on CPU); the same on every machine. With `bound` > 0 the
    values beyond +-bound are drawn again from the same generator until none is left (a
    truncated normal whose values inside the bound are the untruncated latent's)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(z_dim, generator=gen)
    if bound > 0:
        outside = z.abs() > bound
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
            outside = z.abs() > bound
    return z


def latents(seeds: Iterable[int], z_dim: int, device: torch.device,
            bound: float = 0.0) -> torch.Tensor:
    return torch.stack([latent_for_seed(s, z_dim, bound) for s in seeds]).to(device)


def class_vectors(classes: Sequence[int], count: int, device: torch.device) -> torch.Tensor:
    """One-hot rows (len(classes), count) for class indices."""
    for c in classes:
        if not 0 <= c < count:
            raise ValueError(f"class {c} does not exist: the model has classes 0-{count - 1}")
    return one_hot(torch.tensor(list(classes)), count).to(device)


def _row_classes(G: Generator, n: int, cols: int) -> torch.Tensor | None:
    """Classes for a grid of n images in `cols` columns: row r in class r mod C."""
    if not G.classes:
        return None
    device = next(G.parameters()).device
    return class_vectors([(i // cols) % G.classes for i in range(n)], G.classes, device)


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (what `train sample --seeds` accepts)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use numbers and ranges like 0-7,12"
                             ) from None
    if not seeds:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    return seeds


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, psi: float = 1.0, chunk: int = 16,
             c: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, 3, R, R) for latents z [and classes c], in chunks (fixed noise, eval
    mode); a conditional G without c draws image i in class i mod C."""
    if c is None:
        c = _row_classes(G, z.shape[0], 1)
    was_training = G.training
    G.eval()
    try:
        out = [to_uint8(G(z[i:i + chunk], None, psi=psi,
                          c=None if c is None else c[i:i + chunk])).cpu()
               for i in range(0, z.shape[0], chunk)]
    finally:
        G.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def generate_ws(G: Generator, ws: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """uint8 images from W-space latents (StyleGAN-style generators only)."""
    was_training = G.training
    G.eval()
    try:
        out = []
        for i in range(0, ws.shape[0], chunk):
            w = ws[i:i + chunk]
            out.append(to_uint8(G.synthesis(w[:, None].repeat(1, G.num_ws, 1))).cpu())  # type: ignore[operator, attr-defined]
    finally:
        G.train(was_training)
    return torch.cat(out)


def grid_image(images: torch.Tensor, cols: int, pad: int = 2) -> Image.Image:
    """Tile uint8 (N, 3, H, W) images into a white-padded grid, row by row."""
    n, _, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    canvas = torch.full((3, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[:, y:y + h, x:x + w] = images[i]
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def upscale(img: Image.Image, min_side: int = 384) -> Image.Image:
    """Nearest-neighbour enlargement so tiny (16-64 px) grids are visible on screen."""
    factor = max(1, min_side // max(1, min(img.size)))
    return img if factor == 1 else img.resize((img.width * factor, img.height * factor),
                                              Image.Resampling.NEAREST)


def save_image(img: Image.Image, path: Path) -> Path:
    """Write a PNG atomically."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def seed_grid(G: Generator, seeds: Sequence[int], cols: int, psi: float = 1.0,
              bound: float = 0.0, classes: Sequence[int] | None = None) -> Image.Image:
    """Grid of the images of `seeds` (z truncated at `bound` if > 0); a conditional G draws
    `classes` (one per seed, or one for all) or row r in class r mod C."""
    device = next(G.parameters()).device
    c = _row_classes(G, len(seeds), cols)
    if classes is not None:
        chosen = list(classes) * len(seeds) if len(classes) == 1 else list(classes)
        c = class_vectors(chosen, G.classes, device) if G.classes else None
    return grid_image(generate(G, latents(seeds, G.z_dim, device, bound), psi, c=c), cols)


def truncation_sweep(G: Generator, seeds: Sequence[int], psis: Sequence[float],
                     bounds: Sequence[float]) -> Image.Image:
    """One row per seed, one column per truncation: psi in W for StyleGAN2 (1.0 -> 0.5), the
    |z| bound for the others (0 = none, then tighter): variety traded for typicality."""
    device = next(G.parameters()).device
    c = _row_classes(G, len(seeds), 1)
    if G.supports_truncation:
        z = latents(seeds, G.z_dim, device)
        columns = [generate(G, z, psi, c=c) for psi in psis]
    else:
        columns = [generate(G, latents(seeds, G.z_dim, device, bound), c=c) for bound in bounds]
    images = torch.stack(columns, dim=1)  # (seeds, truncations, ...)
    return grid_image(images.flatten(0, 1), cols=len(columns))


def steps_side_by_side(walk: torch.Tensor) -> torch.Tensor:
    """GIF frames of a class walk (seeds, steps, 3, R, R): frame k shows every seed at step
    k, side by side."""
    return torch.stack([torch.from_numpy(np.array(grid_image(walk[:, k], walk.shape[0])))
                        .permute(2, 0, 1) for k in range(walk.shape[1])])


def class_interpolation(G: Generator, seeds: Sequence[int], classes: Sequence[int],
                        frames: int) -> torch.Tensor:
    """(seeds, steps, 3, R, R) uint8: each seed's z held still while its class vector moves
    from one class to the next, `frames` steps per leg (BigGAN's class interpolation)."""
    if not G.classes:
        raise ValueError("class interpolation needs a class-conditional generator "
                         "(train.conditional: true on a labelled dataset)")
    if len(classes) < 2 or frames < 1:
        raise ValueError("class interpolation needs at least two classes and frames >= 1")
    device = next(G.parameters()).device
    ends = class_vectors(classes, G.classes, device)
    t = torch.arange(frames, device=device, dtype=torch.float32)[:, None] / frames
    path = torch.cat([ends[i].lerp(ends[i + 1], t) for i in range(len(classes) - 1)]
                     + [ends[-1:]])  # (steps, C)
    z = latents(seeds, G.z_dim, device)
    steps = path.shape[0]
    images = generate(G, z.repeat_interleave(steps, dim=0), c=path.repeat(len(seeds), 1))
    return images.reshape(len(seeds), steps, *images.shape[1:])


def interpolation_frames(G: Generator, seeds: Sequence[int], frames: int) -> torch.Tensor:
    """Images along a path through the latents of `seeds`, `frames` steps per leg.

    StyleGAN-style generators interpolate linearly in W (the space whose smoothness path
    length regularisation targets); others spherically in Z. A model that memorised its data
    jumps between a few images; a good one travels smoothly.
    """
    device = next(G.parameters()).device
    z = latents(seeds, G.z_dim, device)
    t = torch.arange(frames, device=device, dtype=torch.float32) / frames
    # a conditional G walks within class 0 (class-wise walks: `class_interpolation`)
    c = class_vectors([0], G.classes, device) if G.classes else None
    if G.supports_truncation:
        with torch.no_grad():
            G.eval()
            w = G.map(z, c=None if c is None else c.expand(len(seeds), -1))  # type: ignore[attr-defined]
        path = [w[i].lerp(w[i + 1], t[:, None]) for i in range(len(seeds) - 1)] + [w[-1:]]
        return generate_ws(G, torch.cat(path))
    path = torch.cat([G.interpolate_latents(z[i].expand(frames, -1), z[i + 1].expand(frames, -1), t)
                      for i in range(len(seeds) - 1)] + [z[-1:]])
    return generate(G, path, c=None if c is None else c.expand(path.shape[0], -1))


def save_gif(frames: torch.Tensor, path: Path, duration_ms: int = 80,
             min_side: int = 128) -> Path:
    """Animated GIF of uint8 frames (N, 3, H, W), looping, written atomically."""
    images = [upscale(Image.fromarray(f.permute(1, 2, 0).numpy()), min_side) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=0)
    return path
