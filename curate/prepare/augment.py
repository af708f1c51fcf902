"""Offline augmentation: extra training images made from each aligned image, reproducibly.

Geometric changes (mirror, small rotation, scale jitter) are 3x3 matrices in output space that
`warp` folds into the alignment's single resampling; colour jitter is applied to the result. Every
augmented image is a pure function of (seed, image id, copy index), so a rerun gives the same
bytes, and it records its parent and a readable transform string.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """How many extra images per source image, and how strong each transform may be."""

    mirror: bool = False  # add a mirrored copy of every image (train.mirror does it by default)
    copies: int = 0  # extra randomly jittered copies per image (mirror may apply to them too)
    rotate_deg: float = 5.0  # uniform in [-rotate_deg, +rotate_deg]
    scale: float = 0.05  # zoom factor uniform in [1 - scale, 1 + scale]
    brightness: float = 0.08  # multiplicative, uniform in [1 - b, 1 + b]
    contrast: float = 0.08
    saturation: float = 0.10
    hue_deg: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class Variant:
    """One output image derived from an aligned source: its geometry and colour changes."""

    index: int  # 0 = the plain aligned image
    matrix: np.ndarray | None  # 3x3 output-space transform, None = identity
    colour: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue
    description: str


def _rng(seed: int, image_id: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{image_id}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _about_centre(resolution: int, m2: np.ndarray) -> np.ndarray:
    c = resolution / 2.0
    to = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]], float)
    back = np.array([[1, 0, c], [0, 1, c], [0, 0, 1]], float)
    return back @ m2 @ to


def mirror_matrix(resolution: int) -> np.ndarray:
    return _about_centre(resolution, np.diag([-1.0, 1.0, 1.0]))


def variants(image_id: str, resolution: int, cfg: AugmentConfig) -> list[Variant]:
    """The plain image, its mirror, and ``cfg.copies`` jittered copies (each maybe mirrored)."""
    out = [Variant(0, None, None, "aligned")]
    if cfg.mirror:
        out.append(Variant(1, mirror_matrix(resolution), None, "mirror"))
    for k in range(cfg.copies):
        index = len(out)
        rng = _rng(cfg.seed, image_id, index)
        angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
        a = math.radians(angle)
        m2 = np.array([[zoom * math.cos(a), -zoom * math.sin(a), 0],
                       [zoom * math.sin(a), zoom * math.cos(a), 0], [0, 0, 1]])
        flip = cfg.mirror and rng.random() < 0.5
        if flip:
            m2 = np.diag([-1.0, 1.0, 1.0]) @ m2
        colour = (rng.uniform(1 - cfg.brightness, 1 + cfg.brightness),
                  rng.uniform(1 - cfg.contrast, 1 + cfg.contrast),
                  rng.uniform(1 - cfg.saturation, 1 + cfg.saturation),
                  rng.uniform(-cfg.hue_deg, cfg.hue_deg))
        text = (f"{'mirror,' if flip else ''}rot={angle:+.2f},scale={zoom:.3f},"
                f"bright={colour[0]:.3f},contrast={colour[1]:.3f},sat={colour[2]:.3f},"
                f"hue={colour[3]:+.2f}")
        out.append(Variant(index, _about_centre(resolution, m2), colour, text))
    return out


def apply_colour(rgb: np.ndarray, colour: tuple[float, float, float, float]) -> np.ndarray:
    """Brightness, contrast (around the mean), saturation and hue shift of a uint8 RGB image."""
    brightness, contrast, saturation, hue = colour
    img = rgb.astype(np.float32) * brightness
    mean = img.mean()
    img = (img - mean) * contrast + mean
    img = np.clip(img, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue * 256.0 / 360.0) % 256.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)
