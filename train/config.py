"""Typed configuration of the train stage: the `train:` section of params.yaml.

The dataclasses are validated by `core.config.from_mapping` (the same loader as every other
section), so a typo or a bad value names the key, the value and what is allowed. Only this
package validates the `train:` section: the curation commands leave it alone, and `train fit`
reads nothing of the curation sections but `paths`.

Two hashes matter for resuming (see `dynamics_hash`): a checkpoint is resumed only when the
settings that shape the training trajectory are unchanged. Settings that do not (how long to
train, how often to checkpoint, the per-device batch, loader workers) may change between runs,
so `kimg` can be raised to train further, or a run can move to a machine with fewer GPUs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config import DEFAULT_PARAMS, ConfigError, PathsConfig, from_mapping, load_section

ModelName = Literal["dcgan", "wgan_gp", "stylegan2", "biggan"]
Precision = Literal["auto", "fp32", "bf16"]
AugmentOp = Literal["xflip", "rotate90", "translate", "scale", "rotate", "color", "cutout"]


def _positive(key: str, **values: float | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{key}.{name}: got {value}, expected a positive number")


def _probability(key: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}.{name}: got {value}, expected a probability in [0, 1]")


def _betas(key: str, betas: tuple[float, ...]) -> None:
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"{key}.betas: got {list(betas)}, expected [beta1, beta2] in [0, 1)")


def _label_range(key: str, name: str, pair: tuple[float, ...]) -> None:
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ConfigError(f"{key}.{name}: got {list(pair)}, expected [low, high] with low <= high")


@dataclass(frozen=True)
class ConvNetConfig:
    """The DCGAN-family networks (DCGAN's G and D; the same D without batch norm is the WGAN
    critic): sizes shared by both objectives."""

    channels: int = 64            # feature maps at the output resolution (ngf/ndf)
    max_channels: int = 512
    kernel_size: Literal[4, 5] = 4  # 5x5 as in the DCGAN paper's figure, 4x4 avoids checkerboards
    d_stages: int | None = None   # D's stride-2 convolutions; null: down to 4x4 (log2(R) - 2)
    embed_dim: int = 32           # class embedding in G (conditional runs; concatenated to z)

    def validate_net(self, key: str) -> None:
        _positive(key, channels=self.channels, max_channels=self.max_channels,
                  d_stages=self.d_stages, embed_dim=self.embed_dim)


@dataclass(frozen=True)
class DCGANConfig(ConvNetConfig):
    """Radford et al. 2016 with the label tricks of Salimans et al. 2016 and ganhacks.

    Targets of D's binary cross-entropy are drawn per sample from `real_label` and `fake_label`
    (equal ends: a constant; [0.9, 0.9] is one-sided smoothing; [0.7, 1.2] the noisy soft
    labels some DCGAN recipes use: a target above 1 still has a gradient toward "more real"),
    then swapped with probability `label_flip`. `inverted_labels` trains D with real = 0 and
    fake = 1 (every target t becomes 1 - t, and G aims at 0).
    """

    z_dim: int = 100
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    real_label: tuple[float, ...] = (1.0, 1.0)
    fake_label: tuple[float, ...] = (0.0, 0.0)
    label_flip: float = 0.0       # probability that a sample's real/fake target is swapped
    inverted_labels: bool = False

    def validate(self, key: str) -> None:
        self.validate_net(key)
        _positive(key, z_dim=self.z_dim, lr_g=self.lr_g, lr_d=self.lr_d)
        _betas(key, self.betas)
        _probability(key, label_flip=self.label_flip)
        _label_range(key, "real_label", self.real_label)
        _label_range(key, "fake_label", self.fake_label)


@dataclass(frozen=True)
class WGANGPConfig(ConvNetConfig):
    """Gulrajani et al. 2017: critic without batch norm, gradient penalty, n_critic steps; with
    `gp_lambda: 0`, `clip: 0.01` and `optimizer: rmsprop` it is the original WGAN of Arjovsky
    et al. 2017."""

    z_dim: int = 128
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.0, 0.9)  # Adam's; RMSProp has no betas
    optimizer: Literal["adam", "rmsprop"] = "adam"
    gp_lambda: float = 10.0       # 0 disables the penalty (use with clip for the original WGAN)
    n_critic: int = 5
    clip: float | None = None     # weight clipping of Arjovsky et al. 2017, e.g. 0.01
    drift: float = 0.0            # epsilon * D(real)^2 keeps the critic near 0 (Karras 2018)

    def validate(self, key: str) -> None:
        self.validate_net(key)
        _positive(key, z_dim=self.z_dim, lr=self.lr, n_critic=self.n_critic, clip=self.clip)
        _betas(key, self.betas)
        if self.gp_lambda < 0 or self.drift < 0:
            raise ConfigError(f"{key}: gp_lambda and drift must be >= 0")


@dataclass(frozen=True)
class BigGANConfig:
    """Brock et al. 2019 at a configurable size: shared class embedding feeding conditional
    batch norm, hierarchical latent, self-attention at one resolution, hinge loss, spectral
    norm in G and D, orthogonal regularisation of G; the trainer keeps the EMA of G."""

    z_dim: int = 120
    shared_dim: int = 128         # the class embedding shared by every G block
    channels: int = 96            # ch: a block at resolution r has ch * min(16, R / r) maps
    attention: int | None = 64    # self-attention at this resolution (capped at R / 2); null: none
    hierarchical: bool = True     # z split into chunks, one per block (and one for the 4x4 input)
    lr_g: float = 5e-5
    lr_d: float = 2e-4
    betas: tuple[float, ...] = (0.0, 0.999)
    n_critic: int = 2             # D steps per G step
    ortho: float = 1e-4           # BigGAN's orthogonal regularisation weight (0: off)

    def validate(self, key: str) -> None:
        _positive(key, z_dim=self.z_dim, shared_dim=self.shared_dim, channels=self.channels,
                  lr_g=self.lr_g, lr_d=self.lr_d, n_critic=self.n_critic)
        _betas(key, self.betas)
        if self.attention is not None and (self.attention < 8
                                           or self.attention & (self.attention - 1)):
            raise ConfigError(f"{key}.attention: got {self.attention}, expected a power of two "
                         f">= 8 or null")
        if self.ortho < 0:
            raise ConfigError(f"{key}.ortho: got {self.ortho}, expected >= 0")


@dataclass(frozen=True)
class StyleGAN2Config:
    """Karras et al. 2020 (StyleGAN2) with the StyleGAN2-ADA defaults for small datasets."""

    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mult: float = 0.01
    channel_base: int = 16384     # feature maps at resolution r: min(channel_base / r, max)
    channel_max: int = 512
    lr: float = 0.0025
    betas: tuple[float, ...] = (0.0, 0.99)
    r1_gamma: float | None = None  # None: 0.0002 * resolution^2 / batch (StyleGAN2-ADA 'auto')
    r1_interval: int = 16          # lazy regularisation: R1 every N discriminator steps
    style_mixing: float = 0.9
    mbstd_group: int = 4
    w_avg_beta: float = 0.995      # tracking of the mean w, the centre of truncation
    pl_weight: float = 2.0         # path length regularisation (0: off)
    pl_interval: int = 4           # lazy: every N generator steps
    pl_decay: float = 0.01         # the running mean path length's update rate

    def validate(self, key: str) -> None:
        _positive(key, z_dim=self.z_dim, w_dim=self.w_dim, mapping_layers=self.mapping_layers,
                  mapping_lr_mult=self.mapping_lr_mult, channel_base=self.channel_base,
                  channel_max=self.channel_max, lr=self.lr, r1_interval=self.r1_interval,
                  mbstd_group=self.mbstd_group, pl_interval=self.pl_interval)
        _probability(key, pl_decay=self.pl_decay)
        if self.pl_weight < 0:
            raise ConfigError(f"{key}.pl_weight: got {self.pl_weight}, expected >= 0")
        _betas(key, self.betas)
        _probability(key, style_mixing=self.style_mixing, w_avg_beta=self.w_avg_beta)
        if self.r1_gamma is not None and self.r1_gamma < 0:
            raise ConfigError(f"{key}.r1_gamma: got {self.r1_gamma}, expected >= 0 or null (auto)")

    def gamma(self, resolution: int, batch: int) -> float:
        """The R1 weight; the StyleGAN2-ADA heuristic when not set."""
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * resolution**2 / batch


@dataclass(frozen=True)
class ADAConfig:
    """Adaptive discriminator augmentation (Karras et al. 2020, 'Training GANs with limited
    data'): every op is applied to each image with probability p, p follows the overfitting
    heuristic r_t = E[sign(D(real))] toward `target`."""

    enabled: bool = True
    ops: tuple[AugmentOp, ...] = ("xflip", "rotate90", "translate", "scale", "rotate", "color")
    target: float | None = 0.6   # null: keep p fixed at p_init
    p_init: float = 0.0
    p_max: float = 0.8           # above ~0.8 some ops start to leak into generated images
    interval: int = 4            # adjust p every N iterations
    speed_kimg: float = 500.0    # p can move from 0 to 1 in this many kimg

    def validate(self, key: str) -> None:
        _probability(key, p_init=self.p_init, p_max=self.p_max)
        if self.target is not None:
            _probability(key, target=self.target)
        _positive(key, interval=self.interval, speed_kimg=self.speed_kimg)
        if self.p_init > self.p_max:
            raise ConfigError(f"{key}.p_init: {self.p_init} is above p_max {self.p_max}")
        if len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"{key}.ops: {list(self.ops)} lists an op twice")


@dataclass(frozen=True)
class EMAConfig:
    """Generator weights averaged with a half-life counted in images (StyleGAN's ema_kimg)."""

    half_life_kimg: float = 10.0
    rampup: float | None = 0.05   # early on, half-life <= rampup * images seen so far

    def validate(self, key: str) -> None:
        _positive(key, half_life_kimg=self.half_life_kimg, rampup=self.rampup)


@dataclass(frozen=True)
class ReportConfig:
    """End-of-training outputs: grids, truncation sweep, interpolation, memorisation report."""

    grid: tuple[int, ...] = (8, 4)      # columns x rows of the fixed-seed sample grids
    grid_seed: int = 1234
    truncation: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # psi in W (StyleGAN2)
    z_truncation: tuple[float, ...] = (0.0, 2.0, 1.5, 1.0, 0.5)  # |z| bounds; 0: none (others)
    interpolation_seeds: tuple[int, ...] = (0, 1, 2, 3, 0)
    interpolation_frames: int = 12      # frames between two seeds
    memorisation_samples: int = 64      # generated images compared with the training set
    memorisation_reals: int = 2000      # training images searched for nearest neighbours
    distance_size: int = 32             # images are compared at this size (pixels)

    def validate(self, key: str) -> None:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"{key}.grid: got {list(self.grid)}, expected [columns, rows] >= 1")
        _positive(key, interpolation_frames=self.interpolation_frames,
                  memorisation_samples=self.memorisation_samples,
                  memorisation_reals=self.memorisation_reals, distance_size=self.distance_size)
        if len(self.interpolation_seeds) < 2:
            raise ConfigError(f"{key}.interpolation_seeds: need at least two seeds")
        for psi in self.truncation:
            if not 0.0 <= psi <= 1.0:
                raise ConfigError(f"{key}.truncation: got {psi}, expected values in [0, 1]")
        if any(t < 0 for t in self.z_truncation):
            raise ConfigError(f"{key}.z_truncation: got {list(self.z_truncation)}, expected bounds "
                         f">= 0 (0: no truncation)")


@dataclass(frozen=True)
class MetricsConfig:
    """FID/KID, computed offline with provisioned Inception weights (see train/fid.py)."""

    fid: bool = False
    num_gen: int = 10000       # generated images; FID is biased by N, so N is always reported
    num_real: int | None = None  # null: the whole dataset
    kid_subset: int = 1000

    def validate(self, key: str) -> None:
        _positive(key, num_gen=self.num_gen, num_real=self.num_real, kid_subset=self.kid_subset)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train fit` needs besides the dataset path and the output folder."""

    preset: str | None = None       # a named recipe (train/presets.py); keys given here win
    model: ModelName = "stylegan2"
    conditional: bool = False       # use the dataset's class labels (dataset.json)
    on_new_data: Literal["continue", "fresh"] = "continue"  # a changed dataset: resume or restart
    resolution: int | None = None   # null: the dataset's; smaller: downsampled while loading
    kimg: float = 5000.0            # thousands of real images shown to the discriminator
    batch: int = 32                 # global batch: the same whatever the number of devices
    batch_per_device: int | None = None  # null: batch / devices; smaller: gradient accumulation
    mirror: bool = True             # add x-flipped copies (skipped when the zip has mirrors)
    seed: int = 0
    precision: Precision = "auto"   # auto: bf16 autocast on GPU, fp32 on CPU
    loader_workers: int = 2
    tick_kimg: float = 4.0          # log metrics every N kimg
    checkpoint_kimg: float = 50.0   # training-state checkpoint every N kimg
    keep_checkpoints: int = 3
    sample_kimg: float = 50.0       # fixed-seed sample grid every N kimg
    max_bad_steps: int = 5          # consecutive non-finite steps before a rollback
    max_rollbacks: int = 3
    dcgan: DCGANConfig = field(default_factory=DCGANConfig)
    wgan_gp: WGANGPConfig = field(default_factory=WGANGPConfig)
    stylegan2: StyleGAN2Config = field(default_factory=StyleGAN2Config)
    biggan: BigGANConfig = field(default_factory=BigGANConfig)
    ada: ADAConfig = field(default_factory=ADAConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def validate(self, key: str) -> None:
        key = key or "train"
        _positive(key, kimg=self.kimg, batch=self.batch, batch_per_device=self.batch_per_device,
                  tick_kimg=self.tick_kimg, checkpoint_kimg=self.checkpoint_kimg,
                  keep_checkpoints=self.keep_checkpoints, sample_kimg=self.sample_kimg,
                  max_bad_steps=self.max_bad_steps)
        if self.resolution is not None and (self.resolution < 8
                                            or self.resolution & (self.resolution - 1)):
            raise ConfigError(f"{key}.resolution: got {self.resolution}, expected a power of "
                              "two >= 8 or null (the dataset's resolution)")
        if self.loader_workers < 0 or self.max_rollbacks < 0:
            raise ConfigError(f"{key}: loader_workers and max_rollbacks must be >= 0")

    @classmethod
    def resolve_mapping(cls, data: dict[str, Any], key: str) -> dict[str, Any]:
        """The mapping with its `preset` expanded underneath: the preset's values are the
        defaults, the keys given explicitly override them (nested sections key by key)."""
        from train.presets import expand

        return expand(data, key)

    @property
    def model_config(self) -> DCGANConfig | WGANGPConfig | StyleGAN2Config | BigGANConfig:
        """The hyper-parameters of the chosen model."""
        return getattr(self, self.model)

    def dynamics(self) -> dict[str, Any]:
        """The settings that shape the training trajectory (what a resume must not change)."""
        return {
            "model": self.model,
            "conditional": self.conditional,
            "model_config": dataclasses.asdict(self.model_config),
            "resolution": self.resolution,
            "batch": self.batch,
            "mirror": self.mirror,
            "seed": self.seed,
            "precision": self.precision,
            "ada": dataclasses.asdict(self.ada),
            "ema": dataclasses.asdict(self.ema),
        }

    def dynamics_hash(self) -> str:
        """sha256 of `dynamics()`: checkpoints carry it and are resumed only when it matches."""
        blob = json.dumps(self.dynamics(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (CLI overrides), validated again."""
        new = dataclasses.replace(self, **changes)
        new.validate("train")
        return new


def load_train_config(params: Path = DEFAULT_PARAMS) -> TrainConfig:
    """The `train` section of params.yaml (defaults when the section is absent)."""
    return load_section(params, "train", TrainConfig)


def load_paths(params: Path = DEFAULT_PARAMS) -> PathsConfig:
    """The pipeline's `paths` section (where `--dist NAME` finds data/datasets/NAME.zip)."""
    return load_section(params, "paths", PathsConfig)


def train_config_from_mapping(data: dict[str, Any] | None) -> TrainConfig:
    """Build a validated TrainConfig from a plain mapping (tests, benchmarks, JSON exports)."""
    return from_mapping(TrainConfig, data or {}, "train")


def train_section(mapping: dict[str, Any]) -> tuple[TrainConfig, PathsConfig]:
    """(train, paths) sections of a whole params mapping, validated."""
    return (from_mapping(TrainConfig, mapping.get("train"), "train"),
            from_mapping(PathsConfig, mapping.get("paths"), "paths"))

