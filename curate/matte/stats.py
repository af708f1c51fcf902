"""Mask statistics: how clean a matte is, fed to the quality checks about separation.

- `fg_fraction`: share of the image kept as foreground (alpha >= 0.5). Near 0 means the
  matte found no subject.
- `boundary_sharpness`: in a band around the foreground's edge, the share of pixels the matte
  is confident about (alpha < 0.1 or > 0.9). A network unsure where the subject ends leaves a
  wide half-transparent fringe and scores low.
- `separation`: 1 - Bhattacharyya coefficient between the colour histograms of foreground and
  background (alpha-weighted, 16x16x16 RGB bins smoothed by one bin so that a colour sitting
  on a bin edge does not count as two colours). 0 when both have the same colours (subject
  lost in a busy or same-coloured background), near 1 when they share no colour.

Measured at a reduced size (shorter side `STATS_SIDE`): the figures are ratios, and the
reduction makes them cost a few milliseconds.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

#: Bump when a statistic's definition changes: cached mattes are then re-measured from their
#: saved masks (cheap) instead of being matted again.
STATS_VERSION = 2
STATS_SIDE = 256
BINS = 16
STAT_COLUMNS = ("fg_fraction", "boundary_sharpness", "separation")


def _reduce(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = alpha.shape
    scale = STATS_SIDE / min(h, w)
    if scale >= 1.0:
        return rgb, alpha
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Nearest for the mask: averaging would invent a half-transparent fringe along every
    # crisp edge and make boundary sharpness depend on the image's resolution.
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
            cv2.resize(alpha, size, interpolation=cv2.INTER_NEAREST))


def _histogram(rgb: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted 3-D colour histogram, smoothed, normalised to sum 1."""
    idx = (rgb // (256 // BINS)).astype(np.int32)
    flat = (idx[..., 0] * BINS + idx[..., 1]) * BINS + idx[..., 2]
    hist = np.bincount(flat.ravel(), weights=weight.ravel(), minlength=BINS ** 3)
    hist = gaussian_filter(hist.reshape(BINS, BINS, BINS), sigma=1.0, mode="constant")
    return hist.ravel() / hist.sum()


def mask_stats(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Statistics of `mask` (uint8 HxW, 255 = foreground) over image `rgb` (HxWx3 uint8)."""
    rgb, mask = _reduce(rgb, mask)
    alpha = mask.astype(np.float32) / 255.0
    fg = alpha >= 0.5
    fg_fraction = float(fg.mean())
    sharp = math.nan
    if 0 < fg.sum() < fg.size:
        r = max(2, round(0.015 * min(alpha.shape)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        fg8 = fg.astype(np.uint8)
        band = (cv2.dilate(fg8, kernel) - cv2.erode(fg8, kernel)).astype(bool)
        confident = (alpha < 0.1) | (alpha > 0.9)
        sharp = float(confident[band].mean()) if band.any() else math.nan
    wf, wb = alpha, 1.0 - alpha
    separation = math.nan
    if wf.sum() >= 1.0 and wb.sum() >= 1.0:
        bc = float(np.sqrt(_histogram(rgb, wf) * _histogram(rgb, wb)).sum())
        separation = max(0.0, 1.0 - bc)
    return {"fg_fraction": fg_fraction, "boundary_sharpness": sharp, "separation": separation}
