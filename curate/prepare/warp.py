"""Cut a `Crop` out of an image: rotate, crop, pad and resize in one resampling.

Large reductions are done in two steps: an area-averaging pre-shrink (no aliasing: a 4000 px photo
reduced to 512 in one Lanczos pass would alias fine textures) to within 2x of the target, then the
single affine Lanczos warp. Regions outside the source are filled with the background colour or a
mirror of the image (``pad: reflect``), never black.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from curate.prepare.align import Crop

PadMode = Literal["background", "reflect"]


def warp(image: np.ndarray, crop: Crop, resolution: int, *, pad: PadMode = "background",
         background: tuple[int, int, int] = (255, 255, 255),
         extra: np.ndarray | None = None) -> np.ndarray:
    """The ``resolution`` x ``resolution`` RGB output of ``crop`` applied to ``image`` (HxWx3).

    ``extra`` is an optional 3x3 output-space transform applied after alignment (augmentation:
    mirror, small rotation, scale jitter), folded into the same single resampling.
    """
    scale = crop.scale(resolution)
    src = image
    pre = 1.0
    if scale < 0.5:  # pre-shrink by area averaging to within 2x of the target
        pre = scale * 2.0
        h, w = image.shape[:2]
        size = (max(1, round(w * pre)), max(1, round(h * pre)))
        src = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        pre_x, pre_y = size[0] / w, size[1] / h
    else:
        pre_x = pre_y = 1.0
    m = crop.matrix(resolution)
    # The matrix maps original source pixels; compose with the pre-shrink (source' = D . source).
    m = m @ np.array([[1 / pre_x, 0, 0], [0, 1 / pre_y, 0], [0, 0, 1]])
    # Pixel centres: OpenCV samples at integer coordinates, our geometry uses +0.5 centres.
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    full = np.linalg.inv(half) @ np.vstack([m, [0, 0, 1]]) @ half
    if extra is not None:
        full = np.linalg.inv(half) @ extra @ half @ full
    border = cv2.BORDER_REFLECT_101 if pad == "reflect" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(src, full[:2], (resolution, resolution), flags=cv2.INTER_LANCZOS4,
                          borderMode=border, borderValue=tuple(int(c) for c in background))


def transform_points(points: np.ndarray, crop: Crop, resolution: int,
                     extra: np.ndarray | None = None) -> np.ndarray:
    """Where source points (Nx2, pixel-centre coordinates) land in the output."""
    m = np.vstack([crop.matrix(resolution), [0, 0, 1]])
    if extra is not None:
        m = extra @ m
    pts = np.hstack([np.asarray(points, float), np.ones((len(points), 1))])
    return (pts @ m.T)[:, :2]
