"""Per-image work of the prepare stage (runs in worker processes): align, crop, augment, encode.

A task carries everything the image needs (paths, tag geometry, the settings), so the function is
pure and its PNG outputs can be cached by (image id, settings hash, variant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core import imageio
from curate.prepare.align import (
    Crop,
    NotApplicable,
    box_crop,
    center_crop,
    keypoint_crop,
    mask_file_axis,
    reframe,
)
from curate.prepare.augment import apply_colour, variants
from curate.prepare.keypoint_angle import refined_angle
from curate.prepare.task import Settings, Task
from curate.prepare.warp import warp


@dataclass(frozen=True)
class Output:
    variant: int
    description: str
    png: bytes


@dataclass(frozen=True)
class Prepared:
    """What happened to one image: the method used, the scale, and its outputs (or why none)."""

    image_id: str
    method: str
    angle_deg: float
    upscale: float
    outputs: list[Output]
    skipped: str | None = None


def method_crop(task: Task, method: str, s: Settings) -> Crop:
    """The crop one alignment method gives this image, or NotApplicable."""
    if method == "keypoints":
        if task.keypoints is None:
            raise NotApplicable("no keypoints")
        points, targets = np.array(task.keypoints), np.array(s.keypoint_targets)
        crop = keypoint_crop(points, targets)
        if s.keypoint_angle is None:
            return crop
        return keypoint_crop(points, targets, refined_angle(task, s, crop.angle_deg))
    if method == "box":
        if task.box is None:
            raise NotApplicable("no box")
        return box_crop(*task.box, margin=s.box_margin)
    if method == "mask":
        if task.mask is None:
            raise NotApplicable("no mask")
        axis, (mask_w, mask_h) = mask_file_axis(task.mask)
        axis = axis.toward_top() if s.mask_upright else axis
        return axis.crop(s.mask_margin).scaled(task.width / mask_w, task.height / mask_h)
    if method == "center":
        return center_crop(task.width, task.height)
    if method == "face":
        from curate.prepare.face import face_crop

        return face_crop(task, s)
    raise ValueError(f"unknown alignment method {method!r}")


def choose_crop(task: Task, s: Settings) -> Crop:
    """The first alignment method in ``s.align`` that this image supports (center always does),
    reframed like the keypoint crops when ``s.framing`` says how."""
    framing = dict(s.framing)
    for method in s.align:
        try:
            crop = method_crop(task, method, s)
        except NotApplicable:
            continue
        return reframe(crop, framing[method]) if method in framing else crop
    return center_crop(task.width, task.height)


def encode_png(rgb: np.ndarray, compression: int) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def prepare(task: Task, s: Settings) -> Prepared:
    """Align, crop, resize and augment one image into PNG outputs."""
    crop = choose_crop(task, s)
    upscale = crop.scale(s.resolution)
    if upscale > s.max_upscale:
        return Prepared(task.image_id, crop.method, crop.angle_deg, upscale, [],
                        skipped=f"upscale {upscale:.2f}x > max_upscale {s.max_upscale}")
    # Decode at reduced scale when the crop is much larger than the output (JPEG only), keeping
    # at least 2 source pixels per output pixel for the Lanczos warp.
    need = math.ceil(2 * s.resolution * min(task.width, task.height) / crop.side)
    img = imageio.decode(task.image, background=s.background,
                         min_side=need if need < min(task.width, task.height) else None)
    rgb = np.asarray(img)
    local = crop.scaled(rgb.shape[1] / task.width, rgb.shape[0] / task.height)
    outputs = []
    for v in variants(task.image_id, s.resolution, s.augment):
        out = warp(rgb, local, s.resolution, pad=s.pad, background=s.background, extra=v.matrix)
        if v.colour is not None:
            out = apply_colour(out, v.colour)
        outputs.append(Output(v.index, v.description, encode_png(out, s.png_compression)))
    return Prepared(task.image_id, crop.method, crop.angle_deg, upscale, outputs)
