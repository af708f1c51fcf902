"""The prepare section of params.yaml: resolution, source, framing, keypoint template,
augmentation and export settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.config import ConfigError
from core.device import Device
from curate.prepare.augment import AugmentConfig


@dataclass(frozen=True)
class KeypointTemplateConfig:
    """Two named annotator keypoints and where they land, as fractions of the output side."""

    names: tuple[str, ...] = ("heel", "toe")
    targets: tuple[tuple[float, ...], ...] = ((0.5, 0.8), (0.5, 0.2))

    def validate(self, key: str) -> None:
        if len(self.names) not in (0, 2):
            raise ConfigError(f"{key}.names: got {list(self.names)}, expected two names (or "
                              "none: no keypoint alignment)")
        check_targets(f"{key}.targets", self.targets)


def check_targets(key: str, targets: tuple[tuple[float, ...], ...] | None) -> None:
    """Two distinct [x, y] points (fractions of the output side), or None: two points the same
    would scale the crop by zero."""
    if targets is None:
        return
    if len(targets) != 2 or any(len(t) != 2 for t in targets) or targets[0] == targets[1]:
        raise ConfigError(f"{key}: got {[list(t) for t in targets]}, expected two different "
                          "[x, y] points, fractions of the output side")


@dataclass(frozen=True)
class PrepareConfig:
    """Align, crop and resize to a square, augment, export one StyleGAN zip per distribution."""

    resolution: int = 512
    source: Literal["matte", "original"] = "matte"  # matte: background removed onto `background`
    pad: Literal["background", "reflect"] = "background"
    max_upscale: float = 2.0  # images needing more are left out (listed in the card), not blurred
    box_margin: float = 0.1
    mask_margin: float = 0.08
    #: Reframe box and mask crops to frame the subject as the keypoint crops do (measured on
    #: the images that have both; see curate.prepare.framing).
    match_keypoint_framing: bool = True
    #: Weigh each keypoint angle against the mask's axis by the errors both show on the images
    #: that have both (see curate.prepare.keypoint_angle): close points (eyes) stop tilting.
    keypoint_angle_from_mask: bool = True
    keypoints: KeypointTemplateConfig = field(default_factory=KeypointTemplateConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # see curate/prepare/augment.py
    png_compression: int = 3  # 0-9, lossless either way
    grid: int = 64  # images in the dataset card's sample grid
    face_device: Device = "auto"  # MTCNN face detection (align: face): auto | cpu | cuda

    def validate(self, key: str) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"{key}.resolution: got {self.resolution}, expected a power of two "
                              ">= 8 (StyleGAN needs one)")
        if self.max_upscale < 1.0:
            raise ConfigError(f"{key}.max_upscale: got {self.max_upscale}, expected >= 1")
