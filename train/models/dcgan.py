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

from train.models.base import Discriminator, Generator, log2_resolution
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
    """z (N, z_dim) -> image (N, 3, R, R) in [-1, 1]."""

    name = "dcgan"

    def __init__(self, resolution: int, z_dim: int = 100, channels: int = 64,
                 max_channels: int = 512, kernel_size: int = 4) -> None:
        super().__init__()
        self.init_kwargs = dict(resolution=resolution, z_dim=z_dim, channels=channels,
                                max_channels=max_channels, kernel_size=kernel_size)
        self.resolution, self.z_dim = resolution, z_dim
        pad, out_pad = _padding(kernel_size)
        ch = _channels(4, resolution, channels, max_channels)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False),
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

    def forward(self, z: torch.Tensor, rand: BatchRandom | None = None,
                psi: float = 1.0) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(Discriminator):
    """image (N, 3, R, R) -> logit (N,); `batch_norm=False` gives the WGAN-GP critic."""

    name = "dcgan"

    def __init__(self, resolution: int, channels: int = 64, max_channels: int = 512,
                 kernel_size: int = 4, batch_norm: bool = True) -> None:
        super().__init__()
        pad, _ = _padding(kernel_size)
        res = resolution // 2
        ch = _channels(res, resolution // 2, channels, max_channels)
        layers: list[nn.Module] = [nn.Conv2d(3, ch, kernel_size, 2, pad),
                                   nn.LeakyReLU(0.2, True)]
        while res > 4:
            res //= 2
            nxt = _channels(res, resolution // 2, channels, max_channels)
            layers += [nn.Conv2d(ch, nxt, kernel_size, 2, pad, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(nxt))
            layers.append(nn.LeakyReLU(0.2, True))
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).reshape(-1)
