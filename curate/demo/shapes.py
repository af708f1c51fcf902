"""Procedural drawing of the demo subject: feet, seen from below (``soles``) or from above
(``pov``).

Why procedural: the demo and the tests need photos of a consistent subject with *exact* ground
truth (category, rotation, crop box, alignment keypoints) and nothing may be downloaded. A foot is
drawn in a canonical frame, then rotated/scaled/placed, so every ground-truth value is known
analytically.

Canonical frame (units of "foot length"): ``v`` runs along the foot's long axis from the heel
keypoint (v=0) to the toe keypoint (v=1); ``u`` is across the foot. The keypoints are

* ``heel``: the centre of the heel pad;
* ``toe``: the tip of the second toe (the heel-centre -> second-toe line is the podiatric foot
  axis).

``rotation_deg`` is the angle of the heel->toe vector relative to "toes pointing up" in the image,
positive = counter-clockwise as seen on screen (image y points down), so with ``d = toe - heel``:
``rotation_deg = degrees(atan2(-d.x, -d.y))``.

The crop box (``bbox``) is the tight box around the foot outline (heel to toes, toes included) in
pixel coordinates; for ``pov`` the leg that continues to the image edge is NOT part of the box.
All drawing is a pure function of the ``numpy.random.Generator`` it receives (deterministic).

``shifted=True`` draws the out-of-sample variant (`curate demo-data --variant shifted`): other
backdrops (dark and saturated studio sweeps; grass, sand and bedsheet floors), harder lighting
(strong colour casts, exposure and light gradients), smaller subjects, camera tilt
(foreshortened feet) and more rotated soles. The default path draws exactly what it always did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CATEGORIES = ("soles", "pov")

# Skin tones (linear-ish sRGB in 0..1), light to dark; a random mix of two neighbours is used.
_SKIN = np.array(
    [
        [0.98, 0.84, 0.74],
        [0.95, 0.77, 0.64],
        [0.89, 0.68, 0.52],
        [0.78, 0.56, 0.40],
        [0.62, 0.42, 0.28],
        [0.45, 0.29, 0.19],
        [0.32, 0.20, 0.13],
    ],
    dtype=np.float32,
)
_SOLE_TINT = np.array([0.93, 0.76, 0.68], dtype=np.float32)  # soles are lighter/pinker than skin
_STUDIO = np.array(
    [
        [0.96, 0.96, 0.95],
        [0.88, 0.88, 0.89],
        [0.93, 0.89, 0.82],
        [0.84, 0.89, 0.95],
        [0.95, 0.88, 0.89],
        [0.86, 0.92, 0.86],
        [0.80, 0.80, 0.82],
    ],
    dtype=np.float32,
)
_POLISH = np.array(
    [[0.70, 0.06, 0.12], [0.86, 0.25, 0.47], [0.35, 0.07, 0.22], [0.12, 0.12, 0.15],
     [0.78, 0.47, 0.58], [0.20, 0.30, 0.65]],
    dtype=np.float32,
)
#: Backdrops of the shifted variant: dark, saturated or coloured sweeps the default never uses.
_STUDIO_SHIFTED = np.array(
    [[0.10, 0.12, 0.20], [0.55, 0.10, 0.14], [0.08, 0.40, 0.40], [0.20, 0.20, 0.20],
     [0.85, 0.62, 0.10], [0.30, 0.55, 0.20], [0.45, 0.20, 0.55]],
    dtype=np.float32,
)
_FABRIC = np.array(
    [[0.20, 0.27, 0.42], [0.12, 0.12, 0.14], [0.45, 0.45, 0.47], [0.62, 0.55, 0.42],
     [0.30, 0.36, 0.28], [0.55, 0.16, 0.16]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class FootRender:
    """A rendered foot photo and its ground truth (pixel coordinates of ``image``)."""

    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W uint8, 255 = foot (and leg for pov)
    category: str
    rotation_deg: float
    bbox: tuple[float, float, float, float]  # x, y, w, h
    heel: tuple[float, float]
    toe: tuple[float, float]


# --------------------------------------------------------------------------- canonical geometry


def _chaikin(pts: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Corner-cutting smoothing of a closed polygon (gives the organic outline cheaply)."""
    for _ in range(iterations):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return pts


def _ellipse(cu: float, cv: float, a: float, b: float, tilt: float, n: int = 40) -> np.ndarray:
    """Ellipse polygon; vertex 0 is the tip (+v end), so tip keypoints lie exactly on a vertex."""
    t = math.pi / 2 + np.arange(n) * (2 * math.pi / n)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([cu + x * c + y * s, cv - x * s + y * c], axis=1)


# Outline control points (u, v), medial side (big toe, arch) at negative u; raw units, heel at v~0.
_SOLE_BODY = [
    (0.0, 0.0), (0.09, 0.015), (0.125, 0.07), (0.135, 0.16), (0.14, 0.30), (0.15, 0.42),
    (0.165, 0.55), (0.18, 0.65), (0.185, 0.72), (0.175, 0.765), (0.13, 0.795), (0.06, 0.82),
    (-0.02, 0.835), (-0.10, 0.845), (-0.165, 0.835), (-0.2, 0.78), (-0.207, 0.70),
    (-0.195, 0.62), (-0.155, 0.53), (-0.118, 0.44), (-0.112, 0.34), (-0.122, 0.24),
    (-0.132, 0.14), (-0.118, 0.06), (-0.07, 0.015),
]
# Seen from above the medial arch bulges instead of indenting.
_TOP_BODY = [
    (0.0, 0.0), (0.09, 0.015), (0.125, 0.07), (0.135, 0.16), (0.14, 0.30), (0.15, 0.42),
    (0.165, 0.55), (0.18, 0.65), (0.185, 0.72), (0.175, 0.765), (0.13, 0.795), (0.06, 0.82),
    (-0.02, 0.835), (-0.10, 0.845), (-0.165, 0.835), (-0.2, 0.78), (-0.207, 0.70),
    (-0.2, 0.6), (-0.175, 0.5), (-0.15, 0.40), (-0.14, 0.3), (-0.135, 0.22),
    (-0.132, 0.14), (-0.118, 0.06), (-0.07, 0.015),
]
# Toes, medial (big toe) to lateral: centre u, centre v, half-width, half-length, tilt (rad).
_TOES = [
    (-0.125, 0.905, 0.064, 0.095, 0.06),
    (-0.036, 0.888, 0.039, 0.07, 0.0),
    (0.034, 0.862, 0.036, 0.062, -0.06),
    (0.097, 0.832, 0.033, 0.054, -0.14),
    (0.153, 0.792, 0.030, 0.046, -0.28),
]
_HEEL_RAW = (0.0, 0.12)


def _canon(points: np.ndarray, heel: np.ndarray, toe: np.ndarray) -> np.ndarray:
    """Map raw (u, v) so that heel -> (0, 0) and toe -> (0, 1)."""
    d = toe - heel
    length = float(np.hypot(*d))
    d = d / length
    p = points - heel
    return np.stack([p[:, 0] * d[1] - p[:, 1] * d[0], p @ d], axis=1) / length


@dataclass(frozen=True)
class _Geometry:
    body: np.ndarray  # closed polygon, canonical
    toes: list[np.ndarray]
    nails: list[np.ndarray]
    toe_params: list[tuple[float, float, float, float, float]]  # canonical centre, a, b, tilt


def _geometry(category: str, rng: np.random.Generator) -> _Geometry:
    """Canonical outline with a little per-foot variation (width, toe lengths)."""
    top = category == "pov"
    widen = rng.uniform(0.9, 1.12)
    body = np.array(_TOP_BODY if top else _SOLE_BODY, dtype=np.float64)
    body[:, 0] *= widen
    toes_raw = []
    toe_len = rng.uniform(0.92, 1.1) * (1.12 if top else 1.0)
    for i, (cu, cv, a, b, tilt) in enumerate(_TOES):
        b2 = b * toe_len * rng.uniform(0.95, 1.05)
        cv2_ = cv + (b2 - b) * 0.6
        toes_raw.append((cu * widen, cv2_, a * widen * rng.uniform(0.95, 1.06), b2, tilt))
    # Second toe tip is the toe keypoint.
    cu, cv, a, b, tilt = toes_raw[1]
    toe_tip = _ellipse(cu, cv, a, b, tilt, n=4)[0]
    heel = np.array(_HEEL_RAW)
    body_c = _canon(_chaikin(body, 3), heel, toe_tip)
    toes, nails, params = [], [], []
    for cu, cv, a, b, tilt in toes_raw:
        toes.append(_canon(_ellipse(cu, cv, a, b, tilt), heel, toe_tip))
        nails.append(_canon(_ellipse(cu - 0.0 * a, cv + 0.42 * b, 0.66 * a, 0.46 * b, tilt, 28),
                            heel, toe_tip))
        centre = _canon(np.array([[cu, cv]]), heel, toe_tip)[0]
        params.append((float(centre[0]), float(centre[1]), a, b, tilt))
    return _Geometry(body_c, toes, nails, params)


def _leg_polygon(widen: float) -> np.ndarray:
    """The leg seen from the owner's eyes: from the ankle towards (and past) the image edge."""
    pts = [(-0.12, 0.36), (-0.06, 0.41), (0.04, 0.41), (0.11, 0.36), (0.15, 0.22), (0.165, 0.08),
           (0.17, -0.3), (0.21, -1.0), (0.32, -3.0), (0.6, -9.0), (-0.6, -9.0), (-0.32, -3.0),
           (-0.21, -1.0), (-0.17, -0.3), (-0.165, 0.06), (-0.145, 0.22)]
    leg = np.array(pts, dtype=np.float64)
    leg[:, 0] *= widen
    return _chaikin(leg, 2)


# --------------------------------------------------------------------------- raster helpers


def _fill(shape: tuple[int, int], polys: list[np.ndarray],
          origin: tuple[float, float]) -> np.ndarray:
    """Union of anti-aliased filled polygons (sub-pixel precision) as a uint8 alpha mask.

    Each polygon is filled on its own: one ``fillPoly`` call with several overlapping polygons
    uses the even-odd rule and would punch holes where they overlap (the leg over the ankle).
    """
    mask = np.zeros(shape, np.uint8)
    for poly in polys:
        layer = np.zeros(shape, np.uint8)
        pts = np.round((poly - np.array(origin)) * 16).astype(np.int32)
        cv2.fillPoly(layer, [pts], 255, lineType=cv2.LINE_AA, shift=4)
        np.maximum(mask, layer, out=mask)
    return mask


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Low-frequency noise (about N(0,1)) made by upsampling a coarse grid: cheap at any size."""
    h, w = shape
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float = 0.8) -> np.ndarray:
    n = rng.standard_normal(shape, dtype=np.float32)
    return cv2.GaussianBlur(n, (0, 0), sigma) * (2.0 * math.sqrt(math.pi) * sigma)


def _rounded_shade(alpha: np.ndarray, scale_px: float, floor: float) -> np.ndarray:
    """Shading that darkens towards the silhouette edge: reads as a rounded 3-D body."""
    dist = cv2.distanceTransform((alpha > 127).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(dist / max(scale_px, 1.0), 0.0, 1.0)
    return floor + (1.0 - floor) * np.sqrt(t * (2.0 - t))


def _over(dst: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    a = (alpha.astype(np.float32) * (1.0 / 255.0))[..., None]
    dst *= 1.0 - a
    dst += colour * a


# --------------------------------------------------------------------------- backgrounds


def _studio_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain light studio sweep: one colour, soft vertical gradient, vignette, faint noise."""
    i = rng.integers(len(_STUDIO))
    col = _STUDIO[i] * rng.uniform(0.95, 1.03) + rng.normal(0, 0.015, 3).astype(np.float32)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    grad = 1.0 + rng.uniform(-0.08, 0.08) * yy + rng.uniform(-0.05, 0.05) * xx
    vig = 1.0 - rng.uniform(0.1, 0.3) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0
    lum = grad * vig + 0.012 * _smooth_noise(rng, (h, w), 60)
    return lum[..., None] * col[None, None, :]


def _floor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A floor texture: wood planks, tiles, carpet or concrete."""
    kind = rng.choice(["wood", "tiles", "carpet", "concrete"], p=[0.4, 0.25, 0.2, 0.15])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = rng.uniform(0, math.pi)
    t = xx * math.cos(phi) + yy * math.sin(phi)
    s = -xx * math.sin(phi) + yy * math.cos(phi)
    size = min(h, w)
    if kind == "wood":
        base = np.array([rng.uniform(0.45, 0.8), 0, 0], np.float32)
        base[1] = base[0] * rng.uniform(0.62, 0.75)
        base[2] = base[0] * rng.uniform(0.35, 0.5)
        pw = size * rng.uniform(0.08, 0.18)
        plank = np.floor(t / pw)
        var = (np.sin(plank * 12.9898) * 43758.5453) % 1.0  # per-plank hash in [0, 1)
        warp = _smooth_noise(rng, (h, w), size / 6) * pw * 0.3
        grain = np.sin((t + warp) / pw * rng.uniform(18, 30)) * 0.05
        seam = np.clip(np.abs(((t / pw) % 1.0) - 0.5) * 2 * pw / 2.0 - (pw / 2 - 1.5), 0, 1)
        lum = (0.85 + 0.3 * var) * (1 + grain) * (1 - 0.5 * seam)
        img = lum[..., None] * base
    elif kind == "tiles":
        base = _STUDIO[rng.integers(len(_STUDIO))] * rng.uniform(0.6, 1.0)
        ts = size * rng.uniform(0.15, 0.35)
        gu, gv = (t / ts) % 1.0, (s / ts) % 1.0
        edge = np.minimum(np.minimum(gu, 1 - gu), np.minimum(gv, 1 - gv)) * ts
        grout = np.clip(2.5 - edge, 0, 1)
        tid = np.floor(t / ts) * 7.31 + np.floor(s / ts) * 3.17
        var = ((np.sin(tid) * 43758.5453) % 1.0) * 0.08
        marble = 0.04 * _smooth_noise(rng, (h, w), ts / 3)
        lum = (0.95 + var + marble) * (1 - 0.35 * grout)
        img = lum[..., None] * base
    elif kind == "carpet":
        base = rng.uniform(0.2, 0.7, 3).astype(np.float32)
        lum = 1 + 0.12 * _fine_noise(rng, (h, w), 1.2) + 0.08 * _smooth_noise(rng, (h, w), size / 8)
        img = lum[..., None] * base
    else:
        g = rng.uniform(0.45, 0.7)
        base = np.array([g, g * 0.98, g * 0.95], np.float32)
        lum = 1 + 0.1 * _smooth_noise(rng, (h, w), size / 10) + 0.05 * _fine_noise(rng, (h, w), 1.0)
        img = lum[..., None] * base
    return img.astype(np.float32)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Rugs, furniture edges, cables and objects: the untidy room of a phone photo."""
    h, w = img.shape[:2]
    size = min(h, w)
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.choice(["rug", "furniture", "cable", "blob"], p=[0.3, 0.25, 0.2, 0.25])
        col = tuple(float(c) for c in rng.uniform(0.05, 0.9, 3))
        if kind == "rug":
            c = (rng.uniform(0, w), rng.uniform(0, h))
            rw, rh = size * rng.uniform(0.3, 0.9), size * rng.uniform(0.2, 0.6)
            ang = float(rng.uniform(0, 180))
            box = cv2.boxPoints((c, (rw, rh), ang))
            cv2.fillPoly(img, [np.round(box * 16).astype(np.int32)], col, cv2.LINE_AA, 4)
            col2 = tuple(float(v) for v in rng.uniform(0.05, 0.9, 3))
            for k in range(int(rng.integers(1, 4))):
                f = 0.85 - 0.2 * k
                band = cv2.boxPoints((c, (rw * f, rh * f), ang))
                cv2.polylines(img, [np.round(band * 16).astype(np.int32)], True, col2,
                              max(1, int(size * 0.012)), cv2.LINE_AA, 4)
        elif kind == "furniture":
            side = rng.integers(4)
            depth = size * rng.uniform(0.08, 0.3)
            a, b = sorted(rng.uniform(0, 1, 2))
            dark = tuple(float(v) * 0.45 for v in col)
            if side == 0:
                pts = [(a * w, 0), (b * w, 0), (b * w, depth), (a * w, depth)]
            elif side == 1:
                pts = [(a * w, h), (b * w, h), (b * w, h - depth), (a * w, h - depth)]
            elif side == 2:
                pts = [(0, a * h), (0, b * h), (depth, b * h), (depth, a * h)]
            else:
                pts = [(w, a * h), (w, b * h), (w - depth, b * h), (w - depth, a * h)]
            cv2.fillPoly(img, [np.round(np.array(pts) * 16).astype(np.int32)], dark, cv2.LINE_AA, 4)
        elif kind == "cable":
            n = int(rng.integers(3, 7))
            steps = rng.normal(0, size * 0.25, (n, 2))  # drawn before the start, as always
            pts = np.cumsum(steps, axis=0) + rng.uniform(0, 1, 2) * (w, h)
            cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, col,
                          max(2, int(size * rng.uniform(0.005, 0.015))), cv2.LINE_AA, 4)
        else:
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            ax = (int(size * rng.uniform(0.04, 0.15)), int(size * rng.uniform(0.03, 0.1)))
            cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)


def _room_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _floor(rng, h, w)
    _clutter(rng, img)
    sigma = rng.uniform(0.6, 2.0)
    return cv2.GaussianBlur(img, (0, 0), sigma)


# --------------------------------------------------------------------------- the foot


def _skin(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A skin colour and its darkness in [0, 1]."""
    x = rng.uniform(0, len(_SKIN) - 1)
    i = int(x)
    j = min(i + 1, len(_SKIN) - 1)
    f = x - i
    col = _SKIN[i] * (1 - f) + _SKIN[j] * f
    col = col * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    return col, x / (len(_SKIN) - 1)


def _blob(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2) * 0.5)


def _fit(rng: np.random.Generator, pts: np.ndarray, w: int, h: int, theta: float,
         scale: tuple[float, float] = (0.5, 0.92)) -> tuple[float, np.ndarray]:
    """Random scale and centre so the rotated foot fits in the frame with a margin."""
    c, s = math.cos(theta), math.sin(theta)
    ru, rv = np.array([c, -s]), np.array([-s, -c])
    xy = pts[:, :1] * ru + pts[:, 1:] * rv
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    ext = hi - lo
    margin = 0.03
    lmax = min(w * (1 - 2 * margin) / ext[0], h * (1 - 2 * margin) / ext[1])
    length = lmax * rng.uniform(*scale)
    lo_px, hi_px = lo * length, hi * length
    cx = rng.uniform(w * margin - lo_px[0], w * (1 - margin) - hi_px[0])
    cy = rng.uniform(h * margin - lo_px[1], h * (1 - margin) - hi_px[1])
    return length, np.array([cx, cy])


def sample_rotation(rng: np.random.Generator, category: str, shifted: bool = False) -> float:
    """Mostly upright-ish feet; soles sometimes at any angle (more often in the shifted
    variant)."""
    if category == "soles" and rng.random() < (0.55 if shifted else 0.3):
        return float(rng.uniform(-180, 180))
    spread = 28.0 if category == "soles" else 22.0
    return float(np.clip(rng.normal(0, spread), -75, 75))


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """Width/height in ~300-2000 px, mostly 400-1200 (generation time grows with area)."""

    def side() -> int:
        r = rng.random()
        if r < 0.8:
            return int(rng.integers(400, 1201))
        if r < 0.93:
            return int(rng.integers(1200, 2001))
        return int(rng.integers(300, 400))

    while True:
        w, h = side(), side()
        if max(w, h) / min(w, h) <= 2.2:
            return w, h


def _shifted_backdrop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dark or saturated sweep with a hard light falloff (shifted variant, soles)."""
    col = _STUDIO_SHIFTED[rng.integers(len(_STUDIO_SHIFTED))] * rng.uniform(0.85, 1.15)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    cx, cy = rng.uniform(-0.6, 0.6, 2)
    spot = 1.25 - rng.uniform(0.3, 0.6) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    lum = np.clip(spot, 0.3, 1.4) + 0.02 * _smooth_noise(rng, (h, w), 40)
    return lum[..., None] * col[None, None, :]


def _shifted_floor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grass, sand or a rumpled bedsheet (shifted variant, pov), with some clutter."""
    kind = rng.choice(["grass", "sand", "sheet"])
    size = min(h, w)
    if kind == "grass":
        base = np.array([0.18, 0.42, 0.12], np.float32) * rng.uniform(0.7, 1.2)
        lum = 1 + 0.25 * _fine_noise(rng, (h, w), 1.5) + 0.2 * _smooth_noise(rng, (h, w), size / 8)
    elif kind == "sand":
        base = np.array([0.86, 0.74, 0.52], np.float32) * rng.uniform(0.85, 1.05)
        lum = 1 + 0.08 * _fine_noise(rng, (h, w), 0.8) + 0.1 * _smooth_noise(rng, (h, w), size / 5)
    else:
        base = rng.uniform(0.4, 0.95, 3).astype(np.float32)
        lum = 1 + 0.18 * np.tanh(1.5 * _smooth_noise(rng, (h, w), size / 7))
    img = (lum[..., None] * base).astype(np.float32)
    _clutter(rng, img)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.0))


def render_foot(rng: np.random.Generator, category: str, width: int, height: int,
                rotation_deg: float | None = None, shifted: bool = False) -> FootRender:
    """Draw one foot photo of ``category`` at ``width`` x ``height``; return pixels + ground
    truth. ``shifted``: the out-of-sample variant (see the module docstring)."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    pov = category == "pov"
    geo = _geometry(category, rng)
    mirror = -1.0 if rng.random() < 0.5 else 1.0  # left or right foot
    if rotation_deg is None:
        rotation_deg = sample_rotation(rng, category, shifted)
    theta = math.radians(rotation_deg)
    # Camera tilt (shifted variant): the foot foreshortened along its axis; heel->toe keeps
    # its direction, so the rotation truth is unchanged.
    fore = float(rng.uniform(0.72, 0.95)) if shifted else 1.0
    foot_pts = np.concatenate([geo.body, *geo.toes]) * np.array([mirror, fore])
    length, centre = _fit(rng, foot_pts, width, height, theta,
                          (0.3, 0.6) if shifted else (0.5, 0.92))
    c, s = math.cos(theta), math.sin(theta)
    ru, rv = np.array([c, -s]), np.array([-s, -c])

    def to_px(p: np.ndarray) -> np.ndarray:
        return centre + length * ((p[:, :1] * mirror) * ru + (p[:, 1:] * fore) * rv)

    body_px = to_px(geo.body)
    toes_px = [to_px(t) for t in geo.toes]
    all_px = np.concatenate([body_px, *toes_px])
    x0, y0 = all_px.min(axis=0)
    x1, y1 = all_px.max(axis=0)
    bbox = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    heel = tuple(float(v) for v in to_px(np.array([[0.0, 0.0]]))[0])
    toe = tuple(float(v) for v in to_px(np.array([[0.0, 1.0]]))[0])

    h, w = height, width
    if shifted:
        img = _shifted_floor(rng, h, w) if pov else _shifted_backdrop(rng, h, w)
    else:
        img = _room_background(rng, h, w) if pov else _studio_background(rng, h, w)
    full_mask = np.zeros((h, w), np.uint8)

    # Work only in the region the foot (and its shadow) can touch.
    pad = 0.12 * length
    leg_px = to_px(_leg_polygon(rng.uniform(0.95, 1.15))) if pov else None
    if pov:
        rx0, ry0, rx1, ry1 = 0, 0, w, h
        if leg_px is not None:
            lx0, ly0 = np.minimum(all_px.min(axis=0), leg_px.min(axis=0)) - pad
            lx1, ly1 = np.maximum(all_px.max(axis=0), leg_px.max(axis=0)) + pad
            rx0, ry0 = max(0, int(lx0)), max(0, int(ly0))
            rx1, ry1 = min(w, int(lx1) + 1), min(h, int(ly1) + 1)
    else:
        rx0, ry0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
        rx1, ry1 = min(w, int(x1 + pad) + 1), min(h, int(y1 + pad) + 1)
    rh, rw = ry1 - ry0, rx1 - rx0
    origin = (float(rx0), float(ry0))
    region = img[ry0:ry1, rx0:rx1]

    # Canonical coordinates of every region pixel (for anatomically placed tints).
    yy, xx = np.mgrid[ry0:ry1, rx0:rx1].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    u = (dx * ru[0] + dy * ru[1]) / length * mirror
    v = (dx * rv[0] + dy * rv[1]) / length / fore

    skin, dark = _skin(rng)
    light = rng.uniform(0, 2 * math.pi)
    lx, ly = math.cos(light), math.sin(light)
    gradient = 1.0 + (0.3 if shifted else 0.12) * (dx * lx + dy * ly) / length
    texture = 1.0 + 0.022 * _fine_noise(rng, (rh, rw), max(0.6, length / 900)) \
        + 0.035 * _smooth_noise(rng, (rh, rw), max(4.0, length / 25))

    body_polys = [body_px] + ([leg_px] if pov and leg_px is not None else [])
    body_alpha = _fill((rh, rw), body_polys, origin)
    toe_alphas = [_fill((rh, rw), [t], origin) for t in toes_px]
    union = np.maximum.reduce([body_alpha, *toe_alphas])

    # Soft contact shadow.
    shadow = cv2.GaussianBlur(union.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.035 * length))
    shift = np.float32([[1, 0, -lx * 0.03 * length], [0, 1, -ly * 0.03 * length]])
    shadow = cv2.warpAffine(shadow, shift, (rw, rh), borderMode=cv2.BORDER_REPLICATE)
    region *= (1.0 - (0.3 if not pov else 0.45) * shadow)[..., None]

    if pov:
        base = skin
    else:
        base = skin * (1 - (0.3 + 0.5 * dark)) + _SOLE_TINT * (0.3 + 0.5 * dark)
    colour = np.broadcast_to(base, (rh, rw, 3)).astype(np.float32).copy()
    red = np.array([0.06, -0.05, -0.04], np.float32)
    if not pov:
        pressure = _blob(u, v, 0.0, 0.0, 0.09, 0.08) + _blob(u, v, -0.04, 0.7, 0.14, 0.06)
        arch = _blob(u, v, -0.08, 0.42, 0.06, 0.12)
        colour *= 1 + pressure[..., None] * red * 1.4 + arch[..., None] * 0.06
    else:
        knuckles = _blob(u, v, -0.05, 0.78, 0.15, 0.04)
        ankle = _blob(u, v, 0.0, 0.2, 0.25, 0.12)
        colour *= 1 + knuckles[..., None] * red + ankle[..., None] * 0.03
    shade = _rounded_shade(body_alpha, 0.11 * length, 0.58)
    body_col = colour * (shade * gradient * texture)[..., None]
    _over(region, body_col, body_alpha)

    # Creases at the toe bases / ankle: thin dark curves, slightly blurred.
    crease = np.zeros((rh, rw), np.float32)
    thick = max(1, int(length * 0.004))
    for (cu, cvv, a, b, tilt), tpx in zip(geo.toe_params, toes_px):
        centre_v = cvv - b * 0.55 if not pov else cvv - b * 0.1
        arc = _ellipse(cu, centre_v, a * 0.8, b * 0.25, tilt, 16)
        arc = to_px(arc[len(arc) // 4: 3 * len(arc) // 4 + 1])
        cv2.polylines(crease, [np.round((arc - origin) * 16).astype(np.int32)], False, 1.0,
                      thick, cv2.LINE_AA, 4)
    crease = cv2.GaussianBlur(crease, (0, 0), max(0.7, length * 0.003))

    for i, (tpx, ta) in enumerate(zip(toes_px, toe_alphas)):
        cu, cvv, a, b, tilt = geo.toe_params[i]
        tshade = _rounded_shade(ta, a * length * 0.9, 0.5)
        tint = 1.0 + (0.03 * red / 0.06 if not pov else 0.0) * 0.5
        tcol = colour * (tshade * gradient * texture)[..., None] * tint
        _over(region, tcol, ta)
    region *= (1.0 - 0.25 * crease)[..., None]

    if pov:
        polish = _POLISH[rng.integers(len(_POLISH))] if rng.random() < 0.3 else None
        for npx in (to_px(n) for n in geo.nails):
            na = _fill((rh, rw), [npx], origin)
            if polish is not None:
                ncol = polish * 1.0
            else:
                ncol = skin * 0.45 + np.array([0.95, 0.82, 0.8], np.float32) * 0.55
            nshade = _rounded_shade(na, length * 0.015, 0.75)
            nc = ncol[None, None, :] * (nshade * gradient)[..., None]
            _over(region, np.clip(nc, 0, 1), na)
        if rng.random() < 0.5:
            hem_v = rng.uniform(-0.5, -0.2)
            trouser = _chaikin(np.array([(-0.26, hem_v), (0.26, hem_v + 0.03), (0.7, -9.0),
                                         (-0.7, -9.0)]), 2)
            ta = _fill((rh, rw), [to_px(trouser)], origin)
            ta = np.minimum(ta, cv2.dilate(_fill((rh, rw), [leg_px], origin),
                                           np.ones((3, 3), np.uint8),
                                           iterations=max(1, int(length * 0.02))))
            fab = _FABRIC[rng.integers(len(_FABRIC))]
            weave = 1 + 0.08 * _fine_noise(rng, (rh, rw), 1.0)
            fshade = _rounded_shade(ta, 0.1 * length, 0.5)
            _over(region, fab[None, None, :] * (fshade * weave * gradient)[..., None], ta)
            union = np.maximum(union, ta)
    full_mask[ry0:ry1, rx0:rx1] = union

    # Camera: white balance, exposure, sensor noise.
    wb = np.array([1.0, 1.0, 1.0], np.float32) + rng.normal(
        0, 0.09 if shifted else 0.025, 3).astype(np.float32)
    img *= wb * (rng.uniform(0.75, 1.2) if shifted else rng.uniform(0.92, 1.08))
    img += rng.normal(0, 0.008, (h, w, 1)).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return FootRender(out, full_mask, category, float(rotation_deg), bbox,
                      (heel[0], heel[1]), (toe[0], toe[1]))


def contact_sheet(images: list[np.ndarray], cols: int = 6, cell: int = 256) -> np.ndarray:
    """Thumbnails on a grid (for eyeballing the generator)."""
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * cell, cols * cell, 3), 40, np.uint8)
    for k, im in enumerate(images):
        h, w = im.shape[:2]
        f = cell / max(h, w)
        th = cv2.resize(im, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sheet[r * cell: r * cell + th.shape[0], c * cell: c * cell + th.shape[1]] = th
    return sheet
