"""What prepare works on: one distribution's shared settings and one image's task.

Kept apart from the worker so the alignment methods (`face`, ...) can name these types without
importing the worker that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.device import Device
from curate.prepare.align import AngleWeights, Framing
from curate.prepare.augment import AugmentConfig
from curate.prepare.warp import PadMode


@dataclass(frozen=True)
class Settings:
    """The prepare parameters every image of one distribution shares."""

    resolution: int = 512
    align: tuple[str, ...] = ("keypoints", "box", "mask", "center")
    keypoint_names: tuple[str, str] = ("heel", "toe")
    keypoint_targets: tuple[tuple[float, float], tuple[float, float]] = ((0.5, 0.8), (0.5, 0.2))
    #: Where `face` alignment puts the detected eyes; by default an FFHQ-like face crop.
    face_targets: tuple[tuple[float, float], tuple[float, float]] = ((0.385, 0.44),
                                                                     (0.615, 0.44))
    box_margin: float = 0.1
    mask_margin: float = 0.08
    pad: PadMode = "background"
    background: tuple[int, int, int] = (255, 255, 255)
    max_upscale: float = 2.0
    png_compression: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: Per fallback method ("box", "mask"), how to move its crops to frame like keypoints do.
    framing: tuple[tuple[str, Framing], ...] = ()
    #: How keypoint angles are weighed against the mask's axis (None: the keypoints' alone).
    keypoint_angle: AngleWeights | None = None
    #: Mask crops take the end nearer the image's top as up (else the shape decides; see
    #: `curate.prepare.mask_direction`).
    mask_upright: bool = False
    device: Device = "cpu"  # face detection's device (params prepare.face_device); not hashed


@dataclass(frozen=True)
class Task:
    """One source image and what the annotators / matte stage know about it.

    Geometry is in pixels of the upright original image (``width`` x ``height``); ``image`` may be
    the original or the matte composite (same size), ``mask`` the matte mask (any size).
    """

    image_id: str
    image: Path
    width: int
    height: int
    keypoints: tuple[tuple[float, float], tuple[float, float]] | None = None
    box: tuple[float, float, float, float, float] | None = None
    mask: Path | None = None
    keypoint_annotators: int = 1  # how many annotators' keypoints were averaged
    keypoint_spread: float | None = None  # how far apart they clicked, pixels (tags' kp_spread)
