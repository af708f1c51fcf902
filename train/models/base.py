"""What every generator and discriminator here offers the training loop and the exporters.

A generator maps latents z (N, z_dim) to images (N, 3, R, R) in [-1, 1]; per-sample
randomness (noise maps, style mixing) comes from the `BatchRandom` it is given, or from fixed
buffers when sampling. Its constructor arguments are kept in `init_kwargs` so an exported
state dict plus a JSON file rebuild it without the training code's config.

Class-conditional models (`classes` > 0) take the class as a vector c (N, classes): one-hot
for a class, or a blend of two one-hots to move between classes with z held still (class-wise
interpolation). Embeddings are linear maps of c, which for a one-hot is exactly an embedding
lookup. Discriminators use the projection of Miyato and Koyama 2018: the logit gains the inner
product of the class embedding with D's pooled features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core.errors import ParamsError
from train.rng import BatchRandom


class ArchitectureError(ParamsError, ValueError):
    """Settings that cannot build a network at this resolution (a bad params value)."""


class Generator(nn.Module):
    """Base class: subclasses set `z_dim`, `resolution` and implement `forward`."""

    name: str = "generator"
    z_dim: int
    resolution: int
    classes: int = 0  # 0: unconditional
    init_kwargs: dict[str, Any]

    def forward(self, z: torch.Tensor, rand: BatchRandom | None = None, psi: float = 1.0,
                c: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def supports_truncation(self) -> bool:
        """True when `psi` < 1 means something (a mapping network with a tracked mean w)."""
        return False

    def interpolate_latents(self, z0: torch.Tensor, z1: torch.Tensor,
                            t: torch.Tensor) -> torch.Tensor:
        """Latents between z0 and z1 (N, z_dim): spherical, as Gaussian latents live near a
        sphere; StyleGAN-style models override to interpolate linearly in W instead."""
        a = z0 / z0.norm(dim=-1, keepdim=True)
        b = z1 / z1.norm(dim=-1, keepdim=True)
        omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
        t = t.reshape(-1, 1)
        so = torch.sin(omega)
        out = (torch.sin((1 - t) * omega) / so) * z0 + (torch.sin(t * omega) / so) * z1
        return out

    def update_statistics(self, reduce_sum: Any) -> None:
        """Hook called after each generator step (e.g. the mean w of StyleGAN); default none.

        `reduce_sum(tensor)` sums a tensor over ranks, so statistics follow the global batch.
        """


class Discriminator(nn.Module):
    """Base class: images (N, 3, R, R) [and classes c (N, classes)] -> logits (N,)."""

    name: str = "discriminator"

    def forward(self, images: torch.Tensor,
                c: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ClassProjection(nn.Module):
    """The projection discriminator's class term: <embed(c), features>, per sample."""

    def __init__(self, classes: int, features: int,
                 wrap: Any = lambda module: module) -> None:
        super().__init__()
        self.embed = wrap(nn.Linear(classes, features, bias=False))

    def forward(self, features: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (self.embed(c.to(features.dtype)) * features).sum(dim=1)


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Class indices (N,) -> float one-hot rows (N, classes)."""
    return torch.nn.functional.one_hot(labels.long(), classes).float()


def require_classes(model: nn.Module, c: torch.Tensor | None) -> None:
    """A conditional network needs c; an unconditional one must not get it."""
    classes = getattr(model, "classes", 0)
    if classes and c is None:
        raise ValueError(f"{type(model).__name__} is class-conditional ({classes} classes): "
                         f"pass c")
    if not classes and c is not None:
        raise ValueError(f"{type(model).__name__} is unconditional: it takes no classes")


def channels_at(resolution: int, base: int, maximum: int) -> int:
    """StyleGAN's feature-map rule: fewer channels at higher resolutions."""
    return max(1, min(base // resolution, maximum))


def log2_resolution(resolution: int) -> int:
    """log2 of a power-of-two resolution >= 8 (what the networks are built for)."""
    level = int(math.log2(resolution))
    if 2**level != resolution or resolution < 8:
        raise ValueError(f"resolution {resolution} must be a power of two >= 8")
    return level
