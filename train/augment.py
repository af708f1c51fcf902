"""Adaptive discriminator augmentation (ADA): differentiable augmentations and the p controller.

From Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data": every
image the discriminator sees, real or generated, goes through the same random augmentations,
each op applied with probability p. Because the generator's loss is back-propagated through
them, the ops must be differentiable; because each is applied with p < 1, the generator still
learns the un-augmented distribution (the augmentations do not "leak" while p stays below
about 0.8). p follows an overfitting heuristic: r_t = E[sign(D(real))] is near 0 while D
generalises and near 1 when it memorises the reals; p rises while r_t is above the target
(0.6) and falls below it.

Ops (names as in params.yaml): xflip, rotate90, translate (fractional, std 1/8 of the size),
scale (isotropic, log2 std 0.2), rotate (any angle), color (brightness, contrast, hue,
saturation, each an op of its own), cutout (a grey square of half the size). Geometric ops
are composed into one affine matrix per image and applied with a single bilinear
`grid_sample` with reflection padding; colour ops form one 4x4 matrix per image. All random
parameters come from the step's `BatchRandom`, drawn whether or not an op fires, so the stream
of random numbers does not depend on p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from train.config import ADAConfig
from train.rng import BatchRandom

GEOMETRIC = ("xflip", "rotate90", "translate", "scale", "rotate")
TRANSLATE_STD = 0.125
SCALE_STD = 0.2
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5
SATURATION_STD = 1.0
CUTOUT_SIZE = 0.5
_LUMA = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3.0)


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """(n,) angles -> (n, 3, 3) homogeneous 2-D rotations."""
    c, s = torch.cos(theta), torch.sin(theta)
    m = _eye(theta.shape[0], 3, theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _axis_rotation(theta: torch.Tensor) -> torch.Tensor:
    """(n,) angles -> (n, 4, 4) rotations of RGB about the grey axis (hue rotation)."""
    v = _LUMA.to(theta.device)
    k = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]],
                     device=theta.device)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    outer = torch.outer(v, v)
    r = c * torch.eye(3, device=theta.device) + s * k + (1 - c) * outer  # Rodrigues
    m = _eye(theta.shape[0], 4, theta.device)
    m[:, :3, :3] = r
    return m


class Augmenter:
    """Applies the configured ops with probability `p` (set by the trainer) to image batches."""

    def __init__(self, ops: Sequence[str]) -> None:
        self.ops = tuple(ops)
        self.p = 0.0

    def __call__(self, images: torch.Tensor, rand: BatchRandom) -> torch.Tensor:
        """Augment (n, 3, H, W) images in [-1, 1]; differentiable with respect to them."""
        images = images.float()  # fp32 resampling, also under bf16 autocast
        n, device = images.shape[0], images.device
        p = self.p

        def fires() -> torch.Tensor:
            return (rand.rand() < p).float()

        geom = _eye(n, 3, device)
        geom_any = torch.zeros(n, device=device)
        color = _eye(n, 4, device)
        color_any = torch.zeros(n, device=device)
        cutout = None
        for op in self.ops:
            if op == "xflip":
                on, flip = fires(), torch.floor(rand.rand() * 2)
                m = _eye(n, 3, device)
                m[:, 0, 0] = 1 - 2 * flip * on
                geom, geom_any = geom @ m, geom_any + on * flip
            elif op == "rotate90":
                on, quarter = fires(), torch.floor(rand.rand() * 4)
                geom = geom @ _rotation(quarter * on * (math.pi / 2))
                geom_any = geom_any + on * (quarter > 0).float()
            elif op == "translate":
                on, t = fires(), rand.randn(2) * TRANSLATE_STD * 2  # [-1, 1] spans the image
                m = _eye(n, 3, device)
                m[:, :2, 2] = t * on[:, None]
                geom, geom_any = geom @ m, geom_any + on
            elif op == "scale":
                on, s = fires(), torch.exp2(rand.randn() * SCALE_STD)
                s = torch.where(on > 0, s, torch.ones_like(s))
                m = _eye(n, 3, device)
                m[:, 0, 0], m[:, 1, 1] = s, s
                geom, geom_any = geom @ m, geom_any + on
            elif op == "rotate":
                on, theta = fires(), (rand.rand() * 2 - 1) * math.pi
                geom, geom_any = geom @ _rotation(theta * on), geom_any + on
            elif op == "color":
                color, color_any = self._color(rand, fires, color, color_any, n, device)
            elif op == "cutout":
                on, centre = fires(), rand.rand(2)
                cutout = (on, centre)
            else:  # pragma: no cover - ops are validated by the config
                raise ValueError(f"unknown augmentation {op!r}")

        out = images
        if bool((geom_any > 0).any()):
            grid = F.affine_grid(geom[:, :2, :].to(images.dtype), list(images.shape),
                                 align_corners=False)
            warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                                   align_corners=False)
            out = torch.where((geom_any > 0)[:, None, None, None], warped, out)
        if bool((color_any > 0).any()):
            mat = color.to(out.dtype)
            mixed = torch.einsum("nij,njhw->nihw", mat[:, :3, :3], out) \
                + mat[:, :3, 3][:, :, None, None]
            out = torch.where((color_any > 0)[:, None, None, None], mixed, out)
        if cutout is not None:
            on, centre = cutout
            if bool((on > 0).any()):
                h, w = out.shape[2:]
                ys = (torch.arange(h, device=device) + 0.5) / h
                xs = (torch.arange(w, device=device) + 0.5) / w
                inside_y = (ys[None, :] - centre[:, 1:2]).abs() < CUTOUT_SIZE / 2
                inside_x = (xs[None, :] - centre[:, 0:1]).abs() < CUTOUT_SIZE / 2
                hole = inside_y[:, :, None] & inside_x[:, None, :] & (on > 0)[:, None, None]
                out = out * (~hole)[:, None].to(out.dtype)
        return out

    @staticmethod
    def _color(rand: BatchRandom, fires: Any, color: torch.Tensor, color_any: torch.Tensor,
               n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Brightness, contrast, hue and saturation as one 4x4 matrix per image."""
        on, b = fires(), rand.randn() * BRIGHTNESS_STD
        m = _eye(n, 4, device)
        m[:, :3, 3] = (b * on)[:, None]
        color, color_any = m @ color, color_any + on
        on, c = fires(), torch.exp2(rand.randn() * CONTRAST_STD)
        c = torch.where(on > 0, c, torch.ones_like(c))
        m = _eye(n, 4, device)
        m[:, :3, :3] = m[:, :3, :3] * c[:, None, None]
        color, color_any = m @ color, color_any + on
        on, theta = fires(), (rand.rand() * 2 - 1) * math.pi
        color, color_any = _axis_rotation(theta * on) @ color, color_any + on
        on, s = fires(), torch.exp2(rand.randn() * SATURATION_STD)
        s = torch.where(on > 0, s, torch.ones_like(s))
        v = _LUMA.to(device)
        outer = torch.outer(v, v)
        m = _eye(n, 4, device)
        m[:, :3, :3] = outer + s[:, None, None] * (torch.eye(3, device=device) - outer)
        color, color_any = m @ color, color_any + on
        return color, color_any


class ADAController:
    """Moves p toward the overfitting target; its state goes into every checkpoint.

    `update(rt, images)`: rt = E[sign(D(real))] over the real images shown since the last
    update (reduced over all ranks), `images` = how many. p changes by at most
    images / (speed_kimg * 1000), in the direction of sign(rt - target), and is clamped to
    [0, p_max]. With `target` null p stays at p_init.
    """

    def __init__(self, cfg: ADAConfig) -> None:
        self.cfg = cfg
        self.p = cfg.p_init if cfg.enabled else 0.0
        self.rt: float | None = None

    def update(self, rt: float, images: int) -> float:
        self.rt = rt
        if not self.cfg.enabled or self.cfg.target is None or not math.isfinite(rt):
            return self.p
        step = images / (self.cfg.speed_kimg * 1000.0)
        direction = 1.0 if rt > self.cfg.target else -1.0 if rt < self.cfg.target else 0.0
        self.p = min(max(self.p + direction * step, 0.0), self.cfg.p_max)
        return self.p

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "rt": self.rt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.rt = float(state["p"]), state.get("rt")


def preview_grid(images: torch.Tensor, augmenter: Augmenter, p: float, seed: int = 0,
                 repeats: int = 4) -> torch.Tensor:
    """Rows of the same reals augmented `repeats` times at strength p (first row: originals).

    Uses its own generator, so looking at the preview never changes the training run.
    """
    gen = torch.Generator(device=images.device).manual_seed(seed)
    saved, augmenter.p = augmenter.p, p
    try:
        rows = [images]
        for _ in range(repeats):
            rand = BatchRandom(gen, images.shape[0], slice(0, images.shape[0]), images.device)
            with torch.no_grad():
                rows.append(augmenter(images, rand))
    finally:
        augmenter.p = saved
    return torch.cat(rows)
