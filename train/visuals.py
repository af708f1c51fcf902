"""Pictures people judge a GAN by: sample grids, truncation sweeps, latent interpolations.

Latents come from seeds, one generator per seed (`latent_for_seed`), so image k of a grid is
the same picture at every snapshot of a run and in `train sample --seeds k`: changes between
snapshots are the model's, not the sampling's. Generation uses the fixed noise buffers and
never touches the training RNGs, so looking at a run does not change it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from curate.atomic import atomic_path
from train.data import to_uint8
from train.models.base import Generator


def latent_for_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The latent of `seed` (float32 on CPU); the same on every machine."""
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(seed))


def latents(seeds: Iterable[int], z_dim: int, device: torch.device) -> torch.Tensor:
    return torch.stack([latent_for_seed(s, z_dim) for s in seeds]).to(device)


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
def generate(G: Generator, z: torch.Tensor, psi: float = 1.0, chunk: int = 16) -> torch.Tensor:
    """uint8 images (N, 3, R, R) for latents z, in chunks (fixed noise, eval mode)."""
    was_training = G.training
    G.eval()
    try:
        out = [to_uint8(G(z[i:i + chunk], None, psi=psi)).cpu()
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


def seed_grid(G: Generator, seeds: Sequence[int], cols: int, psi: float = 1.0) -> Image.Image:
    """Grid of the images of `seeds`."""
    device = next(G.parameters()).device
    return grid_image(generate(G, latents(seeds, G.z_dim, device), psi), cols)


def truncation_sweep(G: Generator, seeds: Sequence[int], psis: Sequence[float]) -> Image.Image:
    """One row per seed, one column per psi (1.0 -> 0.5: variety traded for typicality)."""
    device = next(G.parameters()).device
    z = latents(seeds, G.z_dim, device)
    images = torch.stack([generate(G, z, psi) for psi in psis], dim=1)  # (seeds, psis, ...)
    return grid_image(images.flatten(0, 1), cols=len(psis))


def interpolation_frames(G: Generator, seeds: Sequence[int], frames: int) -> torch.Tensor:
    """Images along a path through the latents of `seeds`, `frames` steps per leg.

    StyleGAN-style generators interpolate linearly in W (the space whose smoothness path
    length regularisation targets); others spherically in Z. A model that memorised its data
    jumps between a few images; a good one travels smoothly.
    """
    device = next(G.parameters()).device
    z = latents(seeds, G.z_dim, device)
    t = torch.arange(frames, device=device, dtype=torch.float32) / frames
    if G.supports_truncation:
        with torch.no_grad():
            G.eval()
            w = G.map(z)  # type: ignore[attr-defined]
        path = [w[i].lerp(w[i + 1], t[:, None]) for i in range(len(seeds) - 1)] + [w[-1:]]
        return generate_ws(G, torch.cat(path))
    path = [G.interpolate_latents(z[i].expand(frames, -1), z[i + 1].expand(frames, -1), t)
            for i in range(len(seeds) - 1)] + [z[-1:]]
    return generate(G, torch.cat(path))


def save_gif(frames: torch.Tensor, path: Path, duration_ms: int = 80,
             min_side: int = 128) -> Path:
    """Animated GIF of uint8 frames (N, 3, H, W), looping, written atomically."""
    images = [upscale(Image.fromarray(f.permute(1, 2, 0).numpy()), min_side) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=0)
    return path
