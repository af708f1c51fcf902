"""Named training recipes: the settings of the GAN projects this tool's users come from.

`train.preset: NAME` in params.yaml makes a recipe the defaults of the `train:` section; any
key written next to it overrides the recipe's value (nested sections key by key), so
`preset: superheroes` with `kimg: 10000` is the superheroes recipe trained longer. `train
presets` lists them and `train presets NAME` prints every resolved setting.

Each recipe states where its numbers come from (`source`) and what it changes from this
tool's defaults (`changes`), which is also what the README's recipe table shows. The numbers
are the sources' published settings; sizes that only make sense on the source's hardware (8
GPUs) are kept, since the global batch here is the same on any number of devices (a smaller
machine gets gradient accumulation via `batch_per_device`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from core.config import ConfigError


@dataclass(frozen=True)
class Preset:
    """One recipe: the source project, what it changes, and the `train:` keys it sets."""

    source: str
    changes: str
    settings: dict[str, Any]


def _stylegan2_ada(resolution_maps: int, batch: int, mbstd: int, gamma: float, ema_kimg: float,
                   mapping_layers: int, rampup: float | None) -> dict[str, Any]:
    """StyleGAN2-ADA's configuration keys (train.py `cfg_specs`) as this tool's settings;
    `resolution_maps` is their `fmaps` x 32768 (channel_base)."""
    return {"model": "stylegan2", "batch": batch,
            "stylegan2": {"z_dim": 512, "w_dim": 512, "mapping_layers": mapping_layers,
                          "channel_base": resolution_maps, "channel_max": 512, "lr": 0.0025,
                          "r1_gamma": gamma, "mbstd_group": mbstd},
            "ada": {"enabled": True, "target": 0.6, "speed_kimg": 500.0},
            "ema": {"half_life_kimg": ema_kimg, "rampup": rampup}}


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        source="this project's demo",
        changes="a small StyleGAN2 at 32 px that trains in minutes on a CPU",
        settings={"model": "stylegan2", "resolution": 32, "kimg": 6.0, "batch": 16,
                  "mirror": True,
                  "stylegan2": {"z_dim": 128, "w_dim": 128, "mapping_layers": 4,
                                "channel_base": 1024, "channel_max": 64},
                  "ada": {"speed_kimg": 100.0}, "ema": {"half_life_kimg": 2.0}}),
    "feet": Preset(
        source="StyleGAN2 feet photos (NVlabs stylegan2-ada-pytorch `--cfg auto` at 512 px on "
               "8 GPUs, `--mirror 1`)",
        changes="StyleGAN2 at 512 px, batch 64 (8 GPUs x 8), R1 gamma 0.8192, EMA 20 kimg, "
                "mapping 2 layers, mirrored; judged by the memorisation report and latent walks",
        settings={**_stylegan2_ada(32768, 64, 4, 0.0002 * 512**2 / 64, 20.0, 2, 0.05),
                  "resolution": 512, "mirror": True, "kimg": 25000.0}),
    "superheroes": Preset(
        source="StyleGAN2-ADA superhero art (NVlabs `--cfg paper512`, ADA target 0.6, trained "
               "in cycles of 5000 kimg)",
        changes="StyleGAN2-ADA at 512 px, batch 64, lr 0.0025, R1 gamma 0.5, minibatch-std group "
                "8, EMA 20 kimg, mapping 8 layers, ADA target 0.6, 5000 kimg per cycle",
        settings={**_stylegan2_ada(32768, 64, 8, 0.5, 20.0, 8, None),
                  "resolution": 512, "mirror": True, "kimg": 5000.0}),
    "biggan": Preset(
        source="BigGAN (Brock et al. 2019; BigGAN-PyTorch's 128 px ImageNet recipe)",
        changes="class-conditional BigGAN at 128 px: hinge loss, spectral norm, shared embedding "
                "and hierarchical z (120), self-attention at 64 px, 2 D steps per G step, lr "
                "5e-5 / 2e-4, orthogonal regularisation 1e-4, batch 2048 by accumulation (256 "
                "per device), EMA 0.9999 per step (half-life 14,195 kimg at batch 2048), "
                "truncation sweeps",
        settings={"model": "biggan", "conditional": True, "resolution": 128, "batch": 2048,
                  "batch_per_device": 256, "mirror": True, "kimg": 300000.0,
                  "biggan": {"z_dim": 120, "shared_dim": 128, "channels": 96, "attention": 64,
                             "lr_g": 5e-5, "lr_d": 2e-4, "betas": [0.0, 0.999], "n_critic": 2,
                             "ortho": 1e-4},
                  "ada": {"enabled": False},
                  "ema": {"half_life_kimg": 14195.0, "rampup": 0.05}}),
    "wgan_clip": Preset(
        source="WGAN on Food-101 (Arjovsky et al. 2017: weight clipping)",
        changes="WGAN critic with weights clipped to 0.01, RMSProp lr 5e-5, 5 critic steps per "
                "G step, no gradient penalty, batch 64",
        settings={"model": "wgan_gp", "batch": 64, "mirror": True,
                  "wgan_gp": {"optimizer": "rmsprop", "lr": 5e-5, "clip": 0.01,
                              "gp_lambda": 0.0, "n_critic": 5},
                  "ada": {"enabled": False}}),
    "wgan_gp": Preset(
        source="WGAN-GP on Food-101 (Gulrajani et al. 2017)",
        changes="WGAN critic with gradient penalty 10, Adam lr 1e-4 betas (0, 0.9), 5 critic "
                "steps per G step, batch 64",
        settings={"model": "wgan_gp", "batch": 64, "mirror": True,
                  "wgan_gp": {"optimizer": "adam", "lr": 1e-4, "betas": [0.0, 0.9],
                              "gp_lambda": 10.0, "n_critic": 5},
                  "ada": {"enabled": False}}),
    "dcgan_simpsons": Preset(
        source="DCGAN Simpsons faces (Radford et al. 2016 with the ganhacks label tricks)",
        changes="DCGAN with 5x5 kernels, stride 2, no pooling, lr 2e-4, batch 32, real labels "
                "in [0.7, 1.2], fake in [0, 0.3], 5% flipped, inverted labels, 5 D stages",
        settings={"model": "dcgan", "batch": 32, "mirror": True,
                  "dcgan": {"kernel_size": 5, "lr_g": 2e-4, "lr_d": 2e-4,
                            "betas": [0.5, 0.999], "real_label": [0.7, 1.2],
                            "fake_label": [0.0, 0.3], "label_flip": 0.05,
                            "inverted_labels": True, "d_stages": 5},
                  "ada": {"enabled": False}}),
}


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top`'s keys written over it, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The `train:` mapping with its preset's settings underneath (see the module doc)."""
    name = data.get("preset") if isinstance(data, dict) else None
    if name is None:
        return data
    if name not in PRESETS:
        raise ConfigError(f"{key or 'train'}.preset: unknown preset {name!r}; known: "
                          f"{', '.join(PRESETS)} (or null)")
    return merge(PRESETS[name].settings, data)
