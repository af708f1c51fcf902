"""DCGAN (Radford, Metz and Chintala 2016) generator and discriminator, any power-of-two size.

The generator projects z to a 4x4 map and doubles the resolution with strided transposed
convolutions, batch norm and ReLU, ending in tanh; the discriminator mirrors it with strided
convolutions and LeakyReLU(0.2), batch norm on every layer but the first. The same
discriminator without batch norm is the WGAN-GP critic (the gradient penalty is per sample,
which batch norm would break). Kernel size 4 (the common choice: no checkerboard from uneven
overlap) or 5 (the paper's figure), both halving or doubling the size exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from train.models.base import (
    ArchitectureError,
    ClassProjection,
    Discriminator,
    Generator,
    log2_resolution,
    require_classes,
)
from train.rng import BatchRandom


def _padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) making a stride-2 (transposed) convolution exactly 2x."""
    return (1, 0) if kernel_size == 4 else (2, 1)


def _channels(resolution: int, out_resolution: int, base: int, maximum: int) -> int:
    """Feature maps at `resolution`: `base` at the output size, doubling per halving."""
    return min(base * out_resolution // resolution, maximum)


def _init(module: nn.Module) -> None:
    """The paper's initialisation: N(0, 0.02) weights, BN scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(Generator):
    """z (N, z_dim) [+ class c] -> image (N, 3, R, R) in [-1, 1]; a conditional generator
    concatenates the class embedding to z."""

    name = "dcgan"

    def __init__(self, resolution: int, z_dim: int = 100, channels: int = 64,
                 max_channels: int = 512, kernel_size: int = 4, classes: int = 0,
                 embed_dim: int = 32) -> None:
        super().__init__()
        self.init_kwargs = {"resolution": resolution, "z_dim": z_dim, "channels": channels,
                            "max_channels": max_channels, "kernel_size": kernel_size,
                            "classes": classes, "embed_dim": embed_dim}
        self.resolution, self.z_dim, self.classes = resolution, z_dim, classes
        self.embed = nn.Linear(classes, embed_dim, bias=False) if classes else None
        pad, out_pad = _padding(kernel_size)
        ch = _channels(4, resolution, channels, max_channels)
        z_in = z_dim + (embed_dim if classes else 0)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_in, ch, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch), nn.ReLU(True)]
        res = 4
        for _ in range(log2_resolution(resolution) - 3):
            res *= 2
            nxt = _channels(res, resolution, channels, max_channels)
            layers += [nn.ConvTranspose2d(ch, nxt, kernel_size, 2, pad, out_pad, bias=False),
                       nn.BatchNorm2d(nxt), nn.ReLU(True)]
            ch = nxt
        layers += [nn.ConvTranspose2d(ch, 3, kernel_size, 2, pad, out_pad), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, z: torch.Tensor, rand: BatchRandom | None = None, psi: float = 1.0,
                c: torch.Tensor | None = None) -> torch.Tensor:
        require_classes(self, c)
        if self.embed is not None and c is not None:
            z = torch.cat([z, self.embed(c.to(z.dtype))], dim=1)
        return self.net(z[:, :, None, None])


def default_stages(resolution: int) -> int:
    """Stride-2 stages that bring `resolution` down to 4x4 (the DCGAN paper's depth)."""
    return log2_resolution(resolution) - 2


class DCGANDiscriminator(Discriminator):
    """image (N, 3, R, R) -> logit (N,); `batch_norm=False` gives the WGAN-GP critic.

    `stages` stride-2 convolutions (default: down to 4x4), then one convolution whose kernel
    covers what is left: 5 stages on 64 px end at 2x2 with a 2x2 kernel. A conditional D adds
    the projection of its features summed over that last map.
    """

    name = "dcgan"

    def __init__(self, resolution: int, channels: int = 64, max_channels: int = 512,
                 kernel_size: int = 4, batch_norm: bool = True, stages: int | None = None,
                 classes: int = 0) -> None:
        super().__init__()
        stages = default_stages(resolution) if stages is None else stages
        if not 1 <= stages <= log2_resolution(resolution):
            raise ArchitectureError(f"d_stages {stages} does not fit {resolution} px: between 1 "
                                    f"and {log2_resolution(resolution)} stride-2 stages")
        self.classes = classes
        pad, _ = _padding(kernel_size)
        res, ch = resolution, 3
        layers: list[nn.Module] = []
        for stage in range(stages):
            res //= 2
            nxt = _channels(res, resolution // 2, channels, max_channels)
            norm = batch_norm and stage > 0
            layers.append(nn.Conv2d(ch, nxt, kernel_size, 2, pad, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(nxt))
            layers.append(nn.LeakyReLU(0.2, True))
            ch = nxt
        self.features = nn.Sequential(*layers)
        self.final = nn.Conv2d(ch, 1, res, 1, 0)
        self.project = ClassProjection(classes, ch) if classes else None
        _init(self)

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        require_classes(self, c)
        h = self.features(images)
        logits = self.final(h).reshape(-1)
        if self.project is not None and c is not None:
            logits = logits + self.project(h.mean(dim=(2, 3)), c)
        return logits
