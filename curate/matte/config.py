"""The matte section of params.yaml: the method and its settings, subject selection, and the
checks judged from masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.config import ConfigError
from core.device import Device
from curate.quality.config import Threshold, threshold


@dataclass(frozen=True)
class MatteChecks:
    """Thresholds of the checks the matte stage judges from its masks and composites (the same
    check machinery as quality's: curate/quality/checks.py, source "matte")."""

    poor_separation: Threshold = threshold("absolute", 0.3)
    small_foreground: Threshold = threshold("absolute", 0.02)
    soft_matte: Threshold = threshold("absolute", 0.5)
    matte_off_subject: Threshold = threshold("absolute", 2.7)


@dataclass(frozen=True)
class AlphaMattingConfig:
    """rembg's optional closed-form alpha matting refinement (slow; finer hair/edges)."""

    enabled: bool = False
    foreground_threshold: int = 240
    background_threshold: int = 10
    erode_size: int = 10

    def validate(self, key: str) -> None:
        if not 0 <= self.background_threshold < self.foreground_threshold <= 255:
            raise ConfigError(f"{key}: expected 0 <= background_threshold < "
                              "foreground_threshold <= 255")
        if self.erode_size < 0:
            raise ConfigError(f"{key}.erode_size: got {self.erode_size}, expected >= 0")


@dataclass(frozen=True)
class BorderKeyConfig:
    """Plain-background keying: the background colour is estimated from the image border."""

    border: float = 0.03     # border band width, fraction of the shorter side
    tolerance: float = 18.0  # colour distance (CIE76 Delta E) still counted as background
    feather_px: float = 1.5  # edge softening (Gaussian sigma, pixels of the working size)
    work_side: int = 512     # keying runs at this shorter side, the mask is resized back

    def validate(self, key: str) -> None:
        if not 0 < self.border < 0.5 or self.tolerance <= 0 or self.feather_px < 0:
            raise ConfigError(f"{key}: expected 0 < border < 0.5, tolerance > 0, feather_px >= 0")
        if self.work_side < 32:
            raise ConfigError(f"{key}.work_side: got {self.work_side}, expected >= 32")


@dataclass(frozen=True)
class SubjectConfig:
    """Subject selection on the matte (curate/matte/subject.py): keep the subject's parts and
    cut attached clutter, with a model of the subject learned from the collection itself."""

    enabled: bool = True
    sample: int = 200        # images the subject model is learned from (the lowest image ids)
    rounds: int = 4          # self-training rounds (each refits on the sample it just cleaned)
    train_side: int = 160    # longer side of the sample images during self-training
    work_side: int = 400     # longer side at which each image's matte is cut
    min_images: int = 20     # fewer live images: no model, parts chosen by tags or position
    refit_below: float = 0.9  # refit when less than this share of the sample is the model's

    def validate(self, key: str) -> None:
        if self.sample < 1 or self.rounds < 1 or self.min_images < 1:
            raise ConfigError(f"{key}: sample, rounds and min_images must be >= 1")
        if self.train_side < 64 or self.work_side < 64:
            raise ConfigError(f"{key}: train_side and work_side must be >= 64")
        if not 0 < self.refit_below <= 1:
            raise ConfigError(f"{key}.refit_below: got {self.refit_below}, expected 0 < x <= 1")


@dataclass(frozen=True)
class GrabCutConfig:
    """OpenCV GrabCut seeded by border keying (a fallback that needs no model)."""

    margin: float = 0.04     # inset of the fallback rectangle when keying finds nothing
    iterations: int = 3
    work_side: int = 384

    def validate(self, key: str) -> None:
        if not 0 < self.margin < 0.45 or self.iterations < 1 or self.work_side < 32:
            raise ConfigError(f"{key}: expected 0 < margin < 0.45, iterations >= 1, "
                              "work_side >= 32")


@dataclass(frozen=True)
class MatteConfig:
    method: Literal["rembg", "border_key", "grabcut"] = "rembg"
    model: Literal["u2net", "u2netp"] = "u2net"  # rembg model (u2netp: ~4x faster, coarser)
    threads_per_worker: int = 1  # ONNX Runtime threads in each worker process
    device: Device = "auto"  # U^2-Net and the subject model's features: auto | cpu | cuda
    post_process_mask: bool = False  # rembg's morphological clean-up of the mask
    alpha_matting: AlphaMattingConfig = field(default_factory=AlphaMattingConfig)
    border_key: BorderKeyConfig = field(default_factory=BorderKeyConfig)
    grabcut: GrabCutConfig = field(default_factory=GrabCutConfig)
    subject: SubjectConfig = field(default_factory=SubjectConfig)
    checks: MatteChecks = field(default_factory=MatteChecks)
    png_compress_level: int = 1  # 0-9: output PNGs are lossless either way; 1 is fast
    #: Longer side of composites and masks: bigger images are matted at this size (memory stays
    #: bounded for a 100-megapixel photo; prepare crops at most 1024 or so from it anyway).
    max_side: int = 4096

    def validate(self, key: str) -> None:
        if self.max_side < 256:
            raise ConfigError(f"{key}.max_side: got {self.max_side}, expected >= 256")
        if self.threads_per_worker < 1:
            raise ConfigError(f"{key}.threads_per_worker: got {self.threads_per_worker}, "
                              "expected >= 1")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"{key}.png_compress_level: got {self.png_compress_level}, "
                              "expected 0..9")
