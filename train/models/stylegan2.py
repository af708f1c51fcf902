"""A StyleGAN2-style generator and residual discriminator in plain PyTorch (no custom kernels).

Written from the papers (Karras et al. 2019 "A Style-Based Generator Architecture", 2020
"Analyzing and Improving the Image Quality of StyleGAN", 2020 "Training Generative Adversarial
Networks with Limited Data"); no code is copied from NVIDIA's repositories.

Generator: a mapping network (8 fully connected layers, learning rate x0.01) turns z into w;
the synthesis network starts from a learnt 4x4 constant and, per resolution, upsamples and
applies two modulated 3x3 convolutions (weights scaled per sample by the style A(w), then
demodulated to unit output variance) with per-pixel noise scaled by a learnt strength, and adds
a 1x1 "toRGB" output to the upsampled image so far (skip architecture). The mean w is tracked
for the truncation trick. Discriminator: residual blocks (two 3x3 convolutions plus a 1x1
skip, summed and scaled by 1/sqrt(2)), minibatch standard deviation at 4x4, two dense layers.

Conditional (StyleGAN2-ADA's way): the class embedding, normalised like z, is concatenated to
z at the mapping network's input; the discriminator's last layer outputs a vector whose inner
product with the (normalised) class embedding is the logit (projection).

All layers use the equalised learning rate: weights are stored N(0, 1) and scaled at run time
by 1/sqrt(fan_in), so Adam's per-parameter step is the same for every layer. Resampling uses
bilinear interpolation (which is the [1, 3, 3, 1] filter for 2x upsampling) and 2x2 average
pooling; custom CUDA ops (upfirdn2d, fused bias-activation) are not used, so the code runs the
same on CPU and GPU, at some cost in speed.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.models.base import (
    Discriminator,
    Generator,
    channels_at,
    log2_resolution,
    require_classes,
)
from train.rng import BatchRandom

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) with gain sqrt(2), keeping activations at unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate and a learning-rate multiplier."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0,
                 lr_mult: float = 1.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mult))
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.bias_gain = lr_mult
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; optional 2x average-pool before it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True, activate: bool = True, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels,
                                               kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.activate, self.down = activate, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = downsample(x)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.activate else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True) -> torch.Tensor:
    """Convolve each sample with the weights scaled by its own styles (one grouped conv).

    weight: (O, I, k, k); styles: (N, I). Demodulation rescales each output channel of each
    sample's weights to unit L2 norm, which replaces StyleGAN's AdaIN without its artefacts.
    """
    n, _, h, w = x.shape
    out_ch, in_ch, kh, kw = weight.shape
    wts = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        wts = wts * torch.rsqrt(wts.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    x = x.reshape(1, n * in_ch, h, w)
    out = F.conv2d(x, wts.reshape(n * out_ch, in_ch, kh, kw), padding=kh // 2, groups=n)
    return out.reshape(n, out_ch, h, w)


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """z [+ class embedding] -> w: normalise, then `layers` dense layers at a reduced rate."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mult: float,
                 classes: int = 0) -> None:
        super().__init__()
        self.embed = EqualLinear(classes, w_dim) if classes else None
        dims = [z_dim + (w_dim if classes else 0)] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mult=lr_mult, activate=True)
                                   for a, b in itertools.pairwise(dims)])

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None and c is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(z.dtype)))], dim=1)
        return self.net(x)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally after 2x upsampling) + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.resolution, self.up = resolution, up

    def forward(self, x: torch.Tensor, w: torch.Tensor, rand: BatchRandom | None) -> torch.Tensor:
        if self.up:
            x = upsample(x)
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles)
        noise = (rand.randn(1, self.resolution, self.resolution).to(x.dtype)
                 if rand is not None else self.noise_const)
        x = x + noise * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """1x1 modulated convolution to RGB, no demodulation, no activation."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d(x, self.weight, styles, demodulate=False) \
            + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: [upsample +] two synthesis layers, plus this level's RGB output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int,
                 resolution: int) -> None:
        super().__init__()
        self.first = resolution == 4
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, up=False)
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_ws = 1 if self.first else 2  # ws consumed by convs (toRGB reuses the next)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                rand: BatchRandom | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], rand)
        else:
            x = self.conv0(x, ws[:, 0], rand)
            x = self.conv1(x, ws[:, 1], rand)
        rgb = self.torgb(x, ws[:, self.num_ws])
        img = rgb if img is None else upsample(img) + rgb
        return x, img


class StyleGAN2Generator(Generator):
    """z (N, z_dim) -> image (N, 3, R, R); see the module docstring."""

    name = "stylegan2"

    def __init__(self, resolution: int, z_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8, mapping_lr_mult: float = 0.01,
                 channel_base: int = 16384, channel_max: int = 512,
                 style_mixing: float = 0.9, w_avg_beta: float = 0.995,
                 classes: int = 0) -> None:
        super().__init__()
        self.init_kwargs = {
            "resolution": resolution, "z_dim": z_dim, "w_dim": w_dim,
            "mapping_layers": mapping_layers, "mapping_lr_mult": mapping_lr_mult,
            "channel_base": channel_base, "channel_max": channel_max,
            "style_mixing": style_mixing, "w_avg_beta": w_avg_beta, "classes": classes}
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.classes = classes
        self.style_mixing, self.w_avg_beta = style_mixing, w_avg_beta
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mult, classes)
        blocks, in_ch = [], 0
        for level in range(2, log2_resolution(resolution) + 1):
            res = 2**level
            out_ch = channels_at(res, channel_base, channel_max)
            blocks.append(SynthesisBlock(in_ch, out_ch, w_dim, res))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_ws for b in blocks) + 1
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self._w_sum: torch.Tensor | None = None
        self._w_count = 0

    @property
    def supports_truncation(self) -> bool:
        return True

    def map(self, z: torch.Tensor, psi: float = 1.0,
            c: torch.Tensor | None = None) -> torch.Tensor:
        """z [, c] -> w (N, w_dim), pulled toward the mean w by truncation `psi` < 1."""
        require_classes(self, c)
        w = self.mapping(z, c)
        if psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, psi)
        return w

    def styles(self, z: torch.Tensor, rand: BatchRandom | None = None,
               c: torch.Tensor | None = None, psi: float = 1.0,
               track: bool = True) -> torch.Tensor:
        """The per-layer latents ws (N, num_ws, w_dim) of z: w repeated, style-mixed while
        training (and the mean w tracked then, unless `track` is off: regularisation steps
        must not move it)."""
        w = self.map(z, psi, c)
        if self.training and rand is not None and track:
            self._track(w)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if self.training and rand is not None and self.style_mixing > 0:
            ws = self._mix(ws, rand, c)
        return ws

    def synthesis(self, ws: torch.Tensor, rand: BatchRandom | None = None) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images; noise from `rand`, else the fixed buffers."""
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i:i + block.num_ws + 1], rand)
            i += block.num_ws
        assert img is not None
        return img

    def forward(self, z: torch.Tensor, rand: BatchRandom | None = None, psi: float = 1.0,
                c: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.styles(z, rand, c, psi), rand)

    def _mix(self, ws: torch.Tensor, rand: BatchRandom,
             c: torch.Tensor | None) -> torch.Tensor:
        """Style mixing regularisation: from a random layer on, use a second latent's w.

        The decision and the cut-off are drawn per sample (not per batch, as StyleGAN2-ADA
        does), so they do not depend on how the global batch is split over devices.
        """
        z2 = rand.randn(self.z_dim).to(ws.dtype)
        mix = rand.rand(1) < self.style_mixing
        cutoff = (rand.rand(1) * (self.num_ws - 1)).floor() + 1
        cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, self.num_ws))
        w2 = self.mapping(z2, c)[:, None]
        layer = torch.arange(self.num_ws, device=ws.device)[None]
        return torch.where((layer >= cutoff)[..., None], w2.to(ws.dtype), ws)

    def _track(self, w: torch.Tensor) -> None:
        total = w.detach().float().sum(dim=0)
        self._w_sum = total if self._w_sum is None else self._w_sum + total
        self._w_count += w.shape[0]

    def update_statistics(self, reduce_sum: Any) -> None:
        """Move the mean w toward this step's global-batch mean (for truncation)."""
        if self._w_sum is None:
            return
        stats = torch.cat([self._w_sum, torch.tensor([float(self._w_count)],
                                                     device=self._w_sum.device)])
        stats = reduce_sum(stats)
        mean = stats[:-1] / stats[-1]
        self.w_avg.copy_(mean.lerp(self.w_avg, self.w_avg_beta))
        self._w_sum, self._w_count = None, 0


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convolutions (the second halves the size) + 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False,
                                down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the average standard deviation over groups of `group` consecutive samples.

    Consecutive (not strided) groups keep the statistic the same whether a batch is computed
    whole or split over devices, as long as per-device batches are multiples of `group`.
    """
    n, c, h, w = x.shape
    g = math.gcd(group, n)
    y = x.float().reshape(n // g, g, c, h, w)
    y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
    y = y.repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(Discriminator):
    """image (N, 3, R, R) -> logit (N,): residual architecture of StyleGAN2."""

    name = "stylegan2"

    def __init__(self, resolution: int, channel_base: int = 16384, channel_max: int = 512,
                 mbstd_group: int = 4, classes: int = 0) -> None:
        super().__init__()
        top = log2_resolution(resolution)
        self.mbstd_group = mbstd_group
        self.classes = classes
        self.fromrgb = EqualConv2d(3, channels_at(resolution, channel_base, channel_max), 1)
        self.blocks = nn.Sequential(*[
            DiscriminatorBlock(channels_at(2**level, channel_base, channel_max),
                               channels_at(2**(level - 1), channel_base, channel_max))
            for level in range(top, 2, -1)])
        ch = channels_at(4, channel_base, channel_max)
        self.conv = EqualConv2d(ch + 1, ch, 3)
        self.fc = EqualLinear(ch * 16, ch, activate=True)
        self.out = EqualLinear(ch, ch if classes else 1)
        self.cmap = EqualLinear(classes, ch) if classes else None

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        require_classes(self, c)
        x = self.blocks(self.fromrgb(images))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap is None or c is None:
            return x.reshape(-1)
        cmap = normalize_2nd_moment(self.cmap(c.to(x.dtype)))
        return (x * cmap).sum(dim=1) / math.sqrt(x.shape[1])
