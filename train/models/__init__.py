"""Model factory: build the generator/discriminator pair named in params.yaml, or rebuild an
exported generator from its JSON description (one file per architecture, as rembg's sessions)."""

from __future__ import annotations

from typing import Any

from train.config import TrainConfig
from train.models.base import Discriminator, Generator
from train.models.biggan import BigGANDiscriminator, BigGANGenerator
from train.models.dcgan import DCGANDiscriminator, DCGANGenerator
from train.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["GENERATORS", "Discriminator", "Generator", "build_models", "generator_from_spec"]

#: Generator classes by the `architecture` name written into exports.
GENERATORS: dict[str, type[Generator]] = {
    "dcgan": DCGANGenerator,
    "stylegan2": StyleGAN2Generator,
    "biggan": BigGANGenerator,
}


def build_models(cfg: TrainConfig, resolution: int,
                 classes: int = 0) -> tuple[Generator, Discriminator]:
    """(G, D) for `cfg.model` at `resolution`, conditioned on `classes` classes (0: not);
    weights initialised from torch's global RNG. A size that does not fit the resolution
    raises ValueError naming the setting."""
    if cfg.model in ("dcgan", "wgan_gp"):
        m = cfg.dcgan if cfg.model == "dcgan" else cfg.wgan_gp
        G: Generator = DCGANGenerator(resolution, z_dim=m.z_dim, channels=m.channels,
                                      max_channels=m.max_channels, kernel_size=m.kernel_size,
                                      classes=classes, embed_dim=m.embed_dim)
        D: Discriminator = DCGANDiscriminator(resolution, channels=m.channels,
                                              max_channels=m.max_channels,
                                              kernel_size=m.kernel_size,
                                              batch_norm=cfg.model == "dcgan",
                                              stages=m.d_stages, classes=classes)
        return G, D
    if cfg.model == "biggan":
        b = cfg.biggan
        G = BigGANGenerator(resolution, z_dim=b.z_dim, shared_dim=b.shared_dim,
                            channels=b.channels, attention=b.attention,
                            hierarchical=b.hierarchical, classes=classes)
        D = BigGANDiscriminator(resolution, channels=b.channels, attention=b.attention,
                                classes=classes)
        return G, D
    s = cfg.stylegan2
    G = StyleGAN2Generator(resolution, z_dim=s.z_dim, w_dim=s.w_dim,
                           mapping_layers=s.mapping_layers, mapping_lr_mult=s.mapping_lr_mult,
                           channel_base=s.channel_base, channel_max=s.channel_max,
                           style_mixing=s.style_mixing, w_avg_beta=s.w_avg_beta,
                           classes=classes)
    D = StyleGAN2Discriminator(resolution, channel_base=s.channel_base,
                               channel_max=s.channel_max, mbstd_group=s.mbstd_group,
                               classes=classes)
    return G, D


def generator_from_spec(spec: dict[str, Any]) -> Generator:
    """Rebuild an (untrained) generator from an export's JSON: {"architecture", "kwargs"}."""
    arch = spec.get("architecture")
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator architecture {arch!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[arch](**spec["kwargs"])
