"""Alignment: where to cut the square crop out of a source image, and at what angle.

Every method returns a `Crop`: a centre, a side length and an angle in source pixels. One affine
warp (see `warp.py`) then cuts, rotates and resizes in a single resampling, so aligned images are
resampled once, not three times. Methods, in the order a distribution usually falls back through:

* ``keypoints``: two named annotator points (e.g. heel and toe) go to fixed positions of the output
  (a similarity transform fixed by two point pairs: rotation, scale and shift are all determined);
* ``box``: the annotator's crop box (rotated boxes included), made square with a margin;
* ``mask``: the principal axis of the matte mask's largest part turned upright, and its
  tight box;
* ``face``: eye landmarks from a face detector, as ``keypoints`` (see `face.py`);
* ``center``: the largest centred square (no rotation); always possible.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Rotation convention everywhere: ``angle_deg`` is how far the subject's "up" is turned
#: counter-clockwise on screen from the image's up; aligning turns it back by ``-angle_deg``.


@dataclass(frozen=True)
class Crop:
    """A square region of the source image: centre (x, y), side, rotation; in source pixels."""

    cx: float
    cy: float
    side: float
    angle_deg: float = 0.0
    method: str = "center"

    def matrix(self, resolution: int) -> np.ndarray:
        """2x3 affine matrix mapping source pixel coordinates to output pixel coordinates.

        Output = R(angle) . (p - c) * resolution / side + resolution / 2, where R turns the
        subject's "up" back to the image's up. Pixel centres are at integer + 0.5 on both sides.
        """
        s = resolution / self.side
        a = math.radians(self.angle_deg)
        # Image y points down: a counter-clockwise turn on screen by `a` is the matrix below.
        cos, sin = math.cos(a) * s, math.sin(a) * s
        rot = np.array([[cos, -sin], [sin, cos]])
        centre = np.array([self.cx, self.cy])
        half = resolution / 2.0
        shift = np.array([half, half]) - rot @ centre
        return np.hstack([rot, shift[:, None]])

    def scaled(self, fx: float, fy: float) -> Crop:
        """The same crop in an image resized by (fx, fy) (a mask or a reduced-scale decode)."""
        return Crop(self.cx * fx, self.cy * fy, self.side * math.sqrt(fx * fy), self.angle_deg,
                    self.method)

    def scale(self, resolution: int) -> float:
        """Output pixels per source pixel (> 1 means upscaling)."""
        return resolution / self.side


class NotApplicable(Exception):
    """The image lacks what this method needs (no keypoints, no mask...): try the next one."""


def center_crop(width: int, height: int) -> Crop:
    side = float(min(width, height))
    return Crop(width / 2.0, height / 2.0, side, 0.0, "center")


def keypoint_crop(points: np.ndarray, targets: np.ndarray,
                  angle_deg: float | None = None) -> Crop:
    """The crop that sends ``points`` (2x2 source px) to ``targets`` (2x2, fractions of the side).

    Two point pairs fix a similarity transform: the output side covers
    ``|p1 - p0| / |t1 - t0|`` source pixels and the angle is the difference of the two
    directions. The crop centre is where the output centre (0.5, 0.5) comes from. With
    `angle_deg` (a refined angle, see `curate.prepare.keypoint_angle`) the crop turns by that
    instead, about the points' midpoint, which still lands on the targets' midpoint.
    """
    points = np.asarray(points, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if points.shape != (2, 2) or not np.all(np.isfinite(points)):
        raise NotApplicable("needs two finite keypoints")
    dp, dt = points[1] - points[0], targets[1] - targets[0]
    lp, lt = float(np.hypot(*dp)), float(np.hypot(*dt))
    if lp < 1e-6 or lt < 1e-6:
        raise NotApplicable("keypoints coincide")
    side = lp / lt
    if angle_deg is None:
        # Angle (counter-clockwise on screen, y down) of each direction; the subject is turned
        # by the difference between where its axis points and where the template wants it.
        angle_deg = math.degrees(math.atan2(-dp[1], dp[0]) - math.atan2(-dt[1], dt[0]))
    angle = (angle_deg + 180.0) % 360.0 - 180.0
    # Source point that lands on the output centre: invert the similarity at (0.5, 0.5).
    a = math.radians(angle)
    off = (np.array([0.5, 0.5]) - targets.mean(axis=0)) * side  # in "upright" source units
    # Undo the alignment rotation R(a) (screen-CCW by a with y down) to get a source offset.
    cos, sin = math.cos(a), math.sin(a)
    inv = np.array([[cos, sin], [-sin, cos]])
    centre = points.mean(axis=0) + inv @ off
    return Crop(float(centre[0]), float(centre[1]), side, angle, "keypoints")


def box_crop(x: float, y: float, w: float, h: float, rotation_deg: float = 0.0,
             margin: float = 0.1) -> Crop:
    """A square around an annotator's box (Label Studio semantics: rotation in degrees, clockwise
    on screen, around the box's top-left corner), with ``margin`` of the longer side around it."""
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise NotApplicable("needs a box with positive size")
    r = math.radians(rotation_deg)
    # Centre of the rotated box: top-left corner plus the rotated half-diagonal.
    cx = x + (w / 2) * math.cos(r) - (h / 2) * math.sin(r)
    cy = y + (w / 2) * math.sin(r) + (h / 2) * math.cos(r)
    side = max(w, h) * (1.0 + 2 * margin)
    # A box turned clockwise by r means the subject's up is turned clockwise: CCW angle = -r.
    return Crop(cx, cy, side, -rotation_deg, "box")


@dataclass(frozen=True)
class MaskAxis:
    """The principal axis of a mask's largest part: `up` points to the subject's top.

    It keeps the part's tight box along the axis rather than its pixels, so it is small enough
    to memoise per mask file (`mask_file_axis`)."""

    mean: np.ndarray  # centre of mass (x, y), pixels
    up: np.ndarray  # unit vector (x, y), image coordinates (y down)
    spread: tuple[float, float]  # eigenvalues of the second moments, larger first
    #: the part's extent from `mean`: across (along `up` turned a quarter clockwise on screen)
    #: min and max, then along `up` min and max, in pixels
    extent: tuple[float, float, float, float]

    @property
    def angle_deg(self) -> float:
        """The subject's up as a CCW angle from image up."""
        return math.degrees(math.atan2(-self.up[0], -self.up[1]))

    @property
    def roundness(self) -> float:
        """l1 l2 / (l1 - l2)^2: how far the axis turns for a small change of the shape (to
        first order; infinite for a disc, small for a long thin part)."""
        l1, l2 = self.spread
        return math.inf if l1 - l2 <= 1e-12 else l1 * l2 / (l1 - l2) ** 2

    def flipped(self) -> MaskAxis:
        """The same axis pointing the other way."""
        a0, a1, l0, l1 = self.extent
        return MaskAxis(self.mean, -self.up, self.spread, (-a1, -a0, -l1, -l0))

    def toward_top(self) -> MaskAxis:
        """The axis with `up` toward the image's top (a turn of at most 90 degrees)."""
        return self.flipped() if self.up[1] > 0 else self

    def crop(self, margin: float) -> Crop:
        """The tight box along the axis, made square with `margin` on each side."""
        a0, a1, l0, l1 = self.extent
        across_dir = np.array([-self.up[1], self.up[0]])
        side = max(a1 - a0, l1 - l0) * (1.0 + 2 * margin)
        centre = self.mean + (a0 + a1) / 2 * across_dir + (l0 + l1) / 2 * self.up
        return Crop(float(centre[0]), float(centre[1]), float(side), self.angle_deg, "mask")


def mask_axis(mask: np.ndarray, min_fraction: float = 0.005, upright: bool = False) -> MaskAxis:
    """Principal axis of the subject's mask, its direction settled (see `mask_crop`)."""
    binary = (np.asarray(mask) > 127).astype(np.uint8)
    x0, y0, w, h = cv2.boundingRect(binary)  # the parts are searched within their box only
    ys, xs = np.nonzero(_largest_component(binary[y0:y0 + h, x0:x0 + w])) if w else ((), ())
    if len(xs) < max(16, min_fraction * binary.size):
        raise NotApplicable("mask is (almost) empty")
    xs, ys = xs + x0, ys + y0
    pts = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float64)
    mean = pts.mean(axis=0)
    centred = pts - mean
    cov = centred.T @ centred / len(pts)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, np.argmax(evals)]  # unit vector along the long axis (x, y)
    across_dir = np.array([-major[1], major[0]])
    along, across = centred @ major, centred @ across_dir
    axis = MaskAxis(mean, major, (float(evals.max()), float(evals.min())),
                    (float(across.min()), float(across.max()), float(along.min()),
                     float(along.max())))
    if _points_down(along, xs, ys, binary.shape, np.abs(across)):
        axis = axis.flipped()
    return axis.toward_top() if upright else axis


def mask_crop(mask: np.ndarray, margin: float = 0.08, min_fraction: float = 0.005,
              upright: bool = False) -> Crop:
    """Principal axis of the subject's mask turned upright, then its tight box made square.

    Only the largest connected part of the mask counts: a matte model often keeps a salient
    object beside the subject (a rug, a box on the floor), and one stray blob is enough to swing
    the axis. The axis direction is ambiguous by 180 degrees; it is settled by, in order:

    1. where the subject leaves the frame: a leg, an arm or a torso cut by the image border is
       the subject's bottom (feet seen from above, people, faces);
    2. otherwise the wider end is up (the third moment of the width profile along the axis),
       which for a whole foot is the toes and for a whole person the shoulders.

    On the demo's rembg masks the first rule removed every flip on correctly matted photos.
    With `upright` (a collection shot or drawn upright, see `curate.prepare.mask_direction`)
    the end nearer the image's top is up instead: a cape or a wide stance makes a figure's
    feet end the wider one.
    """
    return mask_axis(mask, min_fraction, upright).crop(margin)


def mask_file_axis(path: Path) -> tuple[MaskAxis, tuple[int, int]]:
    """The axis (direction by shape) of a mask file's largest part and the mask's (width,
    height), memoised per file version: a distribution's calibrations and then its crops
    read each tagged image's mask once. NotApplicable when missing, unreadable or empty."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise NotApplicable(f"mask {path} unreadable: {exc}") from exc
    found = _file_axis(str(path), stat.st_mtime_ns, stat.st_size)
    if isinstance(found, str):
        raise NotApplicable(found)
    return found


@functools.lru_cache(maxsize=1024)
def _file_axis(path: str, _mtime_ns: int, _size: int) -> tuple[MaskAxis, tuple[int, int]] | str:
    """`mask_file_axis` of one file version, or why there is none."""
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return f"mask {path} unreadable"
    try:
        return mask_axis(mask), (mask.shape[1], mask.shape[0])
    except NotApplicable as exc:
        return str(exc)


def _largest_component(fg: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground region (the subject) of a 0/1 uint8 mask."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 2:
        return fg
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _points_down(along: np.ndarray, xs: np.ndarray, ys: np.ndarray, shape: tuple[int, ...],
                 across: np.ndarray) -> bool:
    """True when the positive end of the axis (`along` > 0) is the subject's bottom."""
    h, w = shape[:2]
    on_border = (xs == 0) | (ys == 0) | (xs == w - 1) | (ys == h - 1)
    exits_pos = int((on_border & (along > 0)).sum())
    exits_neg = int((on_border & (along < 0)).sum())
    if max(exits_pos, exits_neg) > 0.01 * (w + h) and \
            max(exits_pos, exits_neg) > 3 * min(exits_pos, exits_neg):
        return exits_pos > exits_neg
    upper = across[along > 0].mean() if np.any(along > 0) else 0.0
    lower = across[along < 0].mean() if np.any(along < 0) else 0.0
    return bool(lower > upper)


@dataclass(frozen=True)
class Framing:
    """Where a method's crops should sit to frame the subject like the keypoint crops do.

    `scale` multiplies the crop's side; (`dx`, `dy`) moves its centre, in its own upright frame
    (x to the subject's right, y down), in units of its side. Measured on the images that have
    both (see `curate.prepare.framing`): a mask's tight box and two keypoints put the
    subject at different sizes and places, and a GAN learns best from one consistent framing.
    """

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0


@dataclass(frozen=True)
class AngleWeights:
    """How one distribution's keypoint angles and mask axes err (fitted and applied by
    `curate.prepare.keypoint_angle`)."""

    offset_deg: float  # the mask axis's angle minus the keypoints', mod 180
    click: float  # annotators' squared click error, as a fraction of the longer side
    shape: float  # mask-axis variance per unit of roundness, radians^2


def framing_between(crop: Crop, reference: Crop) -> Framing:
    """The framing that turns `crop` into `reference` (same image; angles assumed alike)."""
    a = math.radians(crop.angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    d = rot @ np.array([reference.cx - crop.cx, reference.cy - crop.cy]) / crop.side
    return Framing(reference.side / crop.side, float(d[0]), float(d[1]))


def reframe(crop: Crop, framing: Framing) -> Crop:
    """`crop` rescaled and shifted by `framing` (its angle and method unchanged)."""
    a = math.radians(crop.angle_deg)
    inv = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    d = inv @ np.array([framing.dx, framing.dy]) * crop.side
    return Crop(crop.cx + float(d[0]), crop.cy + float(d[1]), crop.side * framing.scale,
                crop.angle_deg, crop.method)


def rotation_of(points: np.ndarray) -> float:
    """CCW-on-screen angle of the direction points[0] -> points[1] from image up (degrees)."""
    d = np.asarray(points[1], float) - np.asarray(points[0], float)
    return math.degrees(math.atan2(-d[0], -d[1]))


def angle_error(a: float, b: float) -> float:
    """Smallest absolute difference between two angles in degrees."""
    return abs((a - b + 180.0) % 360.0 - 180.0)
