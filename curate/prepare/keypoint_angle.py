"""Keypoint angles refined by the matte mask's axis, each weighted by how far it can be trusted.

Two annotator points fix the crop's angle, but a click's error turns it by about the error
over the points' distance: eyes 20 px apart, clicked a few pixels off, tilt a full-body figure
by 10 degrees or more; heel and toe 200 px apart, by a fraction of one. The mask's principal
axis is a second estimate of the same turn, from the whole subject: it differs from the
keypoints' by a constant offset (a foot's axis runs heel to toe, a standing figure's across its
eye line) and is ambiguous by 180 degrees, which the keypoints settle; its error grows as the
mask gets rounder.

Both errors are measured on the distribution's own images:

- **Clicks.** Where two or more annotators placed the keypoints, their spread measures the
  click error (`kp_spread` of the merged tags), as a fraction c of the image's longer side S
  (Label Studio shows an image scaled to the screen, so a click's error scales with it).
  A keypoint angle's variance is then 2 c^2 S^2 / (n L^2): n annotators averaged, L pixels
  between the two points.
- **Masks.** On the images with keypoints and a mask, the two angles' difference d (after the
  offset) has variance (keypoints') + shape * q, q the axis's roundness
  (`align.MaskAxis.roundness`: its first-order turn for a small change of the mask's second
  moments). The offset and `shape` are fitted by maximum likelihood.

Each image then takes the inverse-variance weighted mean of its two angles: close points lean
on the mask, distant ones keep their own angle. Without images tagged twice, or with too few
images that have both, the keypoints' angle stands alone. Nothing is set by hand but the
limits below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from curate.prepare.align import AngleWeights, NotApplicable, keypoint_crop, mask_file_axis
from curate.prepare.task import Settings, Task

#: A mask axis farther than this from the keypoints' angle is another estimate's failure (a
#: matte that kept the wrong part, a mistyped point), not noise: it is left out of the fit and,
#: on an image, the keypoints' angle is kept.
AGREE_DEG = 30.0
#: Fewest images tagged by two or more annotators before the click error counts as measured.
MIN_REPEATS = 3
#: Fewest images with keypoints and a mask before the mask's error is fitted.
MIN_PAIRS = 8
#: Images measured: plenty for one variance and an offset; the measuring (read the mask) is
#: redone on every run.
SAMPLE = 200
#: Offset and mask variance are refined in turn this many times (the offset settles in two).
ROUNDS = 3
#: Candidate mask variances per unit roundness (radians^2), 0 and a log grid: the likelihood
#: search is deterministic, so the settings (and their hash) are too.
SHAPE_GRID = np.concatenate([[0.0], np.logspace(-7, 1, 161)])


@dataclass(frozen=True)
class _Pair:
    """One image's two estimates."""

    keypoint_deg: float
    mask_deg: float
    keypoint_unit: float  # the keypoint angle's variance per unit of click variance c^2
    roundness: float


def _wrap(deg: float, period: float) -> float:
    """`deg` into [-period / 2, period / 2)."""
    return (deg + period / 2) % period - period / 2


def _pair(task: Task, settings: Settings) -> _Pair | None:
    """The image's two angles, when it has keypoints and a readable, usable mask."""
    if task.keypoints is None or task.mask is None:
        return None
    try:
        crop = keypoint_crop(np.array(task.keypoints), np.array(settings.keypoint_targets))
        axis, _ = mask_file_axis(task.mask)
    except NotApplicable:
        return None
    if not math.isfinite(axis.roundness):
        return None
    (x0, y0), (x1, y1) = task.keypoints
    unit = 2.0 * (max(task.width, task.height) / math.hypot(x1 - x0, y1 - y0)) ** 2
    return _Pair(crop.angle_deg, axis.angle_deg, unit / max(1, task.keypoint_annotators),
                 axis.roundness)


def click_variance(tasks: list[Task]) -> float | None:
    """c^2: the annotators' squared click error as a fraction of the longer side, pooled over
    the images two or more annotators placed keypoints on (None: too few of them)."""
    shares = [(t.keypoint_spread / max(t.width, t.height)) ** 2 for t in tasks
              if t.keypoint_spread is not None and t.keypoint_annotators >= 2]
    return float(np.mean(shares)) if len(shares) >= MIN_REPEATS else None


def calibrate_keypoint_angle(tasks: list[Task], settings: Settings) -> Settings:
    """`settings` with the angle weights measured on `tasks` (None when they cannot be)."""
    if "keypoints" not in settings.align:
        return settings
    click = click_variance(tasks)
    pairs: list[_Pair] = []
    if click is not None:
        for task in sorted((t for t in tasks if t.keypoints is not None and t.mask is not None),
                           key=lambda t: t.image_id):
            if len(pairs) == SAMPLE:
                break
            pair = _pair(task, settings)
            if pair is not None:
                pairs.append(pair)
    weights = fit_weights(pairs, click) if click is not None and click > 0.0 else None
    return dataclasses.replace(settings, keypoint_angle=weights)


def fit_weights(pairs: list[_Pair], click: float) -> AngleWeights | None:
    """The offset and the mask's variance per unit roundness, by maximum likelihood (d normal
    with variance click * keypoint_unit + shape * roundness), alternating between the offset
    (the variance-weighted mean of the differences) and `shape` (on `SHAPE_GRID`).

    A subject's mask usually runs along its keypoints' axis or across it, so the offset is
    taken as 0 or 90 degrees unless the measurement sets it apart from both by two standard
    errors (a few noisy keypoints otherwise tilt every mask by their mean error)."""
    if len(pairs) < MIN_PAIRS:
        return None
    diff = np.array([_wrap(p.mask_deg - p.keypoint_deg, 180.0) for p in pairs])
    keypoint_var = click * np.array([p.keypoint_unit for p in pairs])
    q = np.array([p.roundness for p in pairs])

    def fit(offset: float) -> tuple[float, float, float] | None:
        """(shape, the weighted mean of d, its standard error) around `offset`."""
        d = np.array([_wrap(v - offset, 180.0) for v in diff])
        keep = np.abs(d) < AGREE_DEG
        if keep.sum() < MIN_PAIRS:
            return None
        shape = _shape_variance(np.radians(d[keep]), keypoint_var[keep], q[keep])
        weight = 1.0 / (keypoint_var[keep] + shape * q[keep])
        return (shape, float((d[keep] * weight).sum() / weight.sum()),
                math.degrees(1.0 / math.sqrt(float(weight.sum()))))

    # A first offset: the median on the half circle, around the doubled angles' mean direction.
    centre = math.degrees(math.atan2(np.sin(np.radians(2 * diff)).sum(),
                                     np.cos(np.radians(2 * diff)).sum())) / 2
    offset = centre + float(np.median([_wrap(d - centre, 180.0) for d in diff]))
    for _ in range(ROUNDS):
        fitted = fit(offset)
        if fitted is None:
            return None
        offset += fitted[1]
    square = 90.0 * round(offset / 90.0)
    if abs(offset - square) < 2 * fitted[2]:
        offset = square
    fitted = fit(offset)
    if fitted is None:
        return None
    return AngleWeights(round(_wrap(offset, 180.0), 1) + 0.0, _round(click), _round(fitted[0]))


def _shape_variance(d: np.ndarray, keypoint_var: np.ndarray, q: np.ndarray) -> float:
    """The value of `SHAPE_GRID` under which `d` (radians) is likeliest."""
    var = keypoint_var[None, :] + SHAPE_GRID[:, None] * q[None, :]
    nll = (np.log(var) + d[None, :] ** 2 / var).sum(axis=1)
    return float(SHAPE_GRID[int(np.argmin(nll))])


def _round(value: float) -> float:
    """Two significant digits: a few more images rarely change the settings (and their hash)."""
    return float(f"{value:.2g}")


def refined_angle(task: Task, settings: Settings, keypoint_deg: float) -> float:
    """The image's angle: its keypoints' and its mask's, weighted by their variances (the
    keypoints' alone without weights, a usable mask, or agreement within AGREE_DEG)."""
    weights = settings.keypoint_angle
    pair = None if weights is None else _pair(task, settings)
    if weights is None or pair is None:
        return keypoint_deg
    gap = _wrap(pair.mask_deg - weights.offset_deg - keypoint_deg, 180.0)
    if abs(gap) >= AGREE_DEG:
        return keypoint_deg
    keypoint_var = weights.click * pair.keypoint_unit
    share = keypoint_var / (keypoint_var + weights.shape * pair.roundness)
    return keypoint_deg + share * gap
