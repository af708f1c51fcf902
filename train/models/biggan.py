"""BigGAN (Brock, Donahue and Simonyan 2019, "Large Scale GAN Training for High Fidelity
Natural Image Synthesis") at a configurable size, written from the paper.

Generator: z is split into chunks (hierarchical latent): the first becomes a 4x4 map through
a dense layer, each later chunk, concatenated with the shared class embedding, sets the gains
and biases of the conditional batch norms of one residual up-block (BN -> ReLU -> 2x nearest
upsample -> 3x3 conv -> BN -> ReLU -> 3x3 conv, plus an upsampled 1x1 skip). A SAGAN
self-attention layer follows the block at one resolution; BN -> ReLU -> 3x3 conv -> tanh ends
it. Discriminator: pre-activation residual down-blocks (the first without its leading ReLU),
the same self-attention, ReLU, global sum pooling, a dense logit plus the class projection.
Every convolution and dense layer of both has spectral norm (eps 1e-6, as BigGAN-PyTorch); the
shared embedding of G has none. Channels at resolution r of an R px model: ch * min(16, R / r)
in G, ch * min(16, R / 2r) in D (the paper's 128 px layout with ch = 96).

The hinge loss, the orthogonal regularisation and the two D steps per G step are in
train/losses.py; the trainer keeps the EMA of G. Truncation is BigGAN's: z drawn from a normal
truncated at a bound, resampling the values beyond it (train/visuals.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from train.models.base import (
    ArchitectureError,
    ClassProjection,
    Discriminator,
    Generator,
    log2_resolution,
    require_classes,
)
from train.rng import BatchRandom

SN_EPS = 1e-6


def sn(module: nn.Module) -> nn.Module:
    """`module` with its weight spectrally normalised (one power iteration per forward)."""
    return spectral_norm(module, eps=SN_EPS)


def attention_resolution(resolution: int, attention: int | None) -> int | None:
    """Where self-attention goes: the configured resolution, at most half the output's."""
    return None if attention is None else min(attention, resolution // 2)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain (1 + .) and bias are linear in the condition y; with no condition
    (an unconditional, non-hierarchical model) an ordinary affine batch norm."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=cond_dim == 0)
        self.gain = sn(nn.Linear(cond_dim, channels, bias=False)) if cond_dim else None
        self.bias = sn(nn.Linear(cond_dim, channels, bias=False)) if cond_dim else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = self.bn(x)
        if self.gain is None or self.bias is None or y is None:
            return x
        return x * (1 + self.gain(y))[:, :, None, None] + self.bias(y)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019) with the key/value maps max-pooled 2x, as in
    BigGAN; starts as the identity (gamma = 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner, value = max(1, channels // 8), max(1, channels // 2)
        self.theta = sn(nn.Conv2d(channels, inner, 1, bias=False))
        self.phi = sn(nn.Conv2d(channels, inner, 1, bias=False))
        self.g = sn(nn.Conv2d(channels, value, 1, bias=False))
        self.o = sn(nn.Conv2d(value, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2)                        # (n, c/8, hw)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)           # (n, c/8, hw/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)               # (n, c/2, hw/4)
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (n, hw, hw/4)
        o = (g @ beta.transpose(1, 2)).reshape(n, -1, h, w)
        return x + self.gamma * self.o(o)


class GBlock(nn.Module):
    """Residual up-block with conditional batch norm."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn0 = ConditionalBatchNorm(in_channels, cond_dim)
        self.conv0 = sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.bn1 = ConditionalBatchNorm(out_channels, cond_dim)
        self.conv1 = sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = sn(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn0(x, y)), scale_factor=2, mode="nearest")
        h = self.conv1(F.relu(self.bn1(self.conv0(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class BigGANGenerator(Generator):
    """z (N, z_dim) [+ class c] -> image (N, 3, R, R) in [-1, 1]; see the module docstring."""

    name = "biggan"

    def __init__(self, resolution: int, z_dim: int = 120, shared_dim: int = 128,
                 channels: int = 96, attention: int | None = 64, hierarchical: bool = True,
                 classes: int = 0) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {
            "resolution": resolution, "z_dim": z_dim, "shared_dim": shared_dim,
            "channels": channels, "attention": attention, "hierarchical": hierarchical,
            "classes": classes}
        self.resolution, self.z_dim, self.classes = resolution, z_dim, classes
        levels = log2_resolution(resolution) - 2
        slots = levels + 1 if hierarchical else 1
        if z_dim < slots:
            raise ArchitectureError(f"biggan.z_dim {z_dim} is too small to split into {slots} "
                                    f"chunks at {resolution} px (one per block and one for the "
                                    "input)")
        chunk = z_dim // slots
        self.chunks = [z_dim - chunk * (slots - 1)] + [chunk] * (slots - 1)
        self.hierarchical = hierarchical
        self.shared = nn.Linear(classes, shared_dim, bias=False) if classes else None
        cond_dim = (shared_dim if classes else 0) + (chunk if hierarchical else 0)

        def maps(r: int) -> int:
            return channels * min(16, resolution // r)

        self.start_channels = maps(4)
        self.linear = sn(nn.Linear(self.chunks[0], maps(4) * 16))
        attend = attention_resolution(resolution, attention)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for level in range(3, log2_resolution(resolution) + 1):
            r = 2**level
            self.blocks.append(GBlock(maps(r // 2), maps(r), cond_dim))
            if r == attend:
                self.attention[str(len(self.blocks) - 1)] = SelfAttention(maps(r))
        self.out_bn = nn.BatchNorm2d(maps(resolution))
        self.out_conv = sn(nn.Conv2d(maps(resolution), 3, 3, padding=1))
        _orthogonal_init(self)

    def forward(self, z: torch.Tensor, rand: BatchRandom | None = None, psi: float = 1.0,
                c: torch.Tensor | None = None) -> torch.Tensor:
        require_classes(self, c)
        zs = z.split(self.chunks, dim=1)
        shared = self.shared(c.to(z.dtype)) if self.shared is not None and c is not None else None
        h = self.linear(zs[0]).reshape(z.shape[0], self.start_channels, 4, 4)
        for index, block in enumerate(self.blocks):
            parts = ([shared] if shared is not None else []) + (
                [zs[index + 1]] if self.hierarchical else [])
            h = block(h, torch.cat(parts, dim=1) if parts else None)
            if str(index) in self.attention:
                h = self.attention[str(index)](h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class DBlock(nn.Module):
    """Pre-activation residual block, optionally halving the size."""

    def __init__(self, in_channels: int, out_channels: int, down: bool, preactivate: bool
                 ) -> None:
        super().__init__()
        self.conv0 = sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv1 = sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        learnable = in_channels != out_channels or down
        self.skip = sn(nn.Conv2d(in_channels, out_channels, 1)) if learnable else None
        self.down, self.preactivate = down, preactivate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivate else x
        h = self.conv1(F.relu(self.conv0(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        skip = x
        if self.skip is not None:  # BigGAN: conv then pool after a pre-activated input, else
            if self.preactivate:   # pool then conv (cheaper, the same linear map)
                skip = self.skip(skip)
                skip = F.avg_pool2d(skip, 2) if self.down else skip
            else:
                skip = self.skip(F.avg_pool2d(skip, 2) if self.down else skip)
        return h + skip


class BigGANDiscriminator(Discriminator):
    """image (N, 3, R, R) [+ class c] -> logit (N,); see the module docstring."""

    name = "biggan"

    def __init__(self, resolution: int, channels: int = 96, attention: int | None = 64,
                 classes: int = 0) -> None:
        super().__init__()
        self.classes = classes

        def maps(r: int) -> int:
            return channels * min(16, resolution // (2 * r))

        attend = attention_resolution(resolution, attention)
        blocks: list[nn.Module] = []
        in_ch, r = 3, resolution
        while r > 4:
            r //= 2
            blocks.append(DBlock(in_ch, maps(r), down=True, preactivate=bool(blocks)))
            in_ch = maps(r)
            if r == attend:
                blocks.append(SelfAttention(in_ch))
        blocks.append(DBlock(in_ch, in_ch, down=False, preactivate=True))
        self.blocks = nn.Sequential(*blocks)
        self.linear = sn(nn.Linear(in_ch, 1))
        self.project = ClassProjection(classes, in_ch, sn) if classes else None
        _orthogonal_init(self)

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        require_classes(self, c)
        h = F.relu(self.blocks(images)).sum(dim=(2, 3))
        logits = self.linear(h).reshape(-1)
        if self.project is not None and c is not None:
            logits = logits + self.project(h, c)
        return logits


def _orthogonal_init(module: nn.Module) -> None:
    """BigGAN's orthogonal initialisation of every convolution and dense weight."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") \
                else m.weight
            nn.init.orthogonal_(weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def orthogonal_penalty(G: nn.Module) -> torch.Tensor:
    """BigGAN's orthogonal regularisation: sum over G's weights (flattened to rows) of
    ||W W^T * (1 - I)||_F^2, which pushes filters toward orthogonality without constraining
    their norms; the shared class embedding is left out, as in the paper's code release."""
    total: torch.Tensor | None = None
    for name, param in G.named_parameters():
        if param.ndim < 2 or name.startswith("shared"):
            continue
        w = param.flatten(1)
        gram = w @ w.T
        off = gram * (1 - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype))
        term = off.square().sum()
        total = term if total is None else total + term
    assert total is not None
    return total
