"""Procedural drawing of the second demo subject: cartoon superhero figures (``--subject figures``).

The users' other known dataset is superhero art: ``full`` (whole figure, head to boots) and
``upper`` (head to waist, the frame cuts the body) figures in flat, outlined cartoon colours,
whose backgrounds are to be removed to white and whose faces are what the crop aligns on. As
for the feet, a figure is drawn in a canonical frame and placed by a similarity transform, so
the ground truth is exact.

Canonical frame (units of head height): ``u`` to the image right, ``v`` down, the origin half
way between the eyes. The keypoints are the eye centres, ``eye_left`` and ``eye_right`` as the
upright figure faces the viewer (image left and image right). ``rotation_deg`` is the angle of
the figure's up axis (waist -> head) from image up, counter-clockwise on screen, the feet's
convention; the eye_left -> eye_right direction turns with it.

Outliers of this subject (`render_outlier`): ``realistic`` (photographic colour: scikit-image's
astronaut, or a figure shaded, textured and coloured like a photo), ``non_human`` (a car, a
house, a tree or a fish in the same flat style) and ``not_separated`` (a figure without
outlines on a busy background painted in its own colours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from curate.demo.shapes import FootRender, _chaikin, _fill, _fine_noise, _smooth_noise

CATEGORIES = ("full", "upper")
KEYPOINTS = ("eye_left", "eye_right")
OUTLIER_KINDS = ("realistic", "non_human", "not_separated")

_SKIN = np.array([[1.0, 0.86, 0.72], [0.96, 0.76, 0.6], [0.82, 0.6, 0.42], [0.6, 0.4, 0.26],
                  [0.42, 0.27, 0.17], [0.7, 0.9, 0.55], [0.55, 0.75, 1.0]], np.float32)
_COSTUME = np.array([[0.9, 0.1, 0.12], [0.1, 0.25, 0.85], [0.1, 0.65, 0.2], [0.95, 0.8, 0.05],
                     [0.55, 0.15, 0.75], [0.1, 0.1, 0.12], [0.95, 0.45, 0.05],
                     [0.05, 0.7, 0.8], [0.95, 0.95, 0.95]], np.float32)
_HAIR = np.array([[0.08, 0.06, 0.05], [0.45, 0.25, 0.1], [0.95, 0.8, 0.3], [0.8, 0.2, 0.1],
                  [0.9, 0.9, 0.92], [0.2, 0.3, 0.9]], np.float32)
_PASTEL = np.array([[0.8, 0.9, 1.0], [1.0, 0.9, 0.7], [0.9, 1.0, 0.85], [1.0, 0.85, 0.9],
                    [0.85, 0.82, 1.0], [0.6, 0.8, 0.95], [1.0, 0.75, 0.4]], np.float32)
#: extent of the figure in canonical v: hair top, and the bottom of full / upper framing
_TOP, _FEET, _WAIST = -0.72, 6.75, 2.7


@dataclass(frozen=True)
class _Part:
    poly: np.ndarray  # canonical polygon
    colour: np.ndarray
    outline: bool = True
    body: bool = True  # part of the figure's mask (False: eye whites drawn over the head)
    closed: bool = True


def _ellipse(cu: float, cv: float, a: float, b: float, n: int = 48) -> np.ndarray:
    t = np.arange(n) * (2 * math.pi / n)
    return np.stack([cu + a * np.cos(t), cv + b * np.sin(t)], axis=1)


def _limb(p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float) -> np.ndarray:
    """A tapered limb between two points (a quad with rounded ends)."""
    a, b = np.array(p0, float), np.array(p1, float)
    d = b - a
    n = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d)))
    quad = np.array([a + n * w0, b + n * w1, b - n * w1, a - n * w0])
    return _chaikin(quad, 2)


def _figure_parts(rng: np.random.Generator, full: bool) -> list[_Part]:
    """Back to front: cape, legs, torso, arms, neck, hair, head, face."""
    skin = _SKIN[rng.integers(len(_SKIN))]
    suit = _COSTUME[rng.integers(len(_COSTUME))]
    accent = _COSTUME[rng.integers(len(_COSTUME))]
    if np.allclose(accent, suit):
        accent = _COSTUME[(rng.integers(len(_COSTUME) - 1) + 1) % len(_COSTUME)]
    hair = _HAIR[rng.integers(len(_HAIR))]
    broad = rng.uniform(0.85, 1.15)
    parts: list[_Part] = []
    if rng.random() < 0.5:  # cape
        bottom = 5.9 if full else 4.0
        cape = np.array([(-0.8 * broad, 0.85), (0.8 * broad, 0.85), (1.6, bottom),
                         (0.0, bottom + 0.2), (-1.6, bottom)])
        parts.append(_Part(_chaikin(cape, 2), accent))
    if full:
        spread = rng.uniform(0.0, 0.45)
        for side in (-1, 1):
            hip, foot = (side * 0.32, 2.75), (side * (0.45 + spread), _FEET - 0.35)
            knee = ((hip[0] + foot[0]) / 2, (hip[1] + foot[1]) / 2)
            parts.append(_Part(_limb(hip, knee, 0.3, 0.24), suit))
            parts.append(_Part(_limb(knee, foot, 0.24, 0.22), accent))
            parts.append(_Part(_ellipse(foot[0] + side * 0.12, foot[1] + 0.12, 0.32, 0.2), accent))
    torso = np.array([(-0.95 * broad, 0.8), (0.95 * broad, 0.8), (1.0 * broad, 1.2),
                      (0.62, 2.9), (-0.62, 2.9), (-1.0 * broad, 1.2)])
    parts.append(_Part(_chaikin(torso, 2), suit))
    parts.append(_Part(np.array([(-0.64, 2.62), (0.64, 2.62), (0.63, 2.88), (-0.63, 2.88)]),
                       accent))  # belt
    emblem = rng.integers(3)
    if emblem == 0:
        poly = _ellipse(0, 1.55, 0.36, 0.36, 32)
    elif emblem == 1:
        poly = np.array([(0, 1.15), (0.4, 1.55), (0, 1.95), (-0.4, 1.55)])
    else:
        poly = np.array([(-0.45, 1.25), (0.45, 1.25), (0, 1.95)])
    parts.append(_Part(poly, accent))
    for side in (-1, 1):
        shoulder = (side * 0.95 * broad, 1.0)
        raise_ = rng.uniform(-0.5, 1.2)  # arm angle from hanging down
        ang = side * raise_
        elbow = (shoulder[0] + side * 0.25 + math.sin(ang) * 1.0,
                 shoulder[1] + math.cos(abs(ang)) * 1.0)
        hand = (elbow[0] + math.sin(ang) * 0.9 + side * 0.1, elbow[1] + math.cos(abs(ang)) * 0.9)
        parts.append(_Part(_limb(shoulder, elbow, 0.26, 0.22), suit))
        parts.append(_Part(_limb(elbow, hand, 0.22, 0.2), accent))
        parts.append(_Part(_ellipse(hand[0], hand[1] + 0.08, 0.2, 0.2, 24), accent))
    parts.append(_Part(np.array([(-0.16, 0.4), (0.16, 0.4), (0.18, 0.85), (-0.18, 0.85)]), skin))
    parts.append(_Part(_ellipse(0, -0.12, 0.5, 0.58), hair))
    parts.append(_Part(_ellipse(0, 0.08, 0.42, 0.52), skin))
    if rng.random() < 0.5:  # mask over the eyes
        parts.append(_Part(_chaikin(np.array([(-0.44, -0.12), (0.44, -0.12), (0.4, 0.12),
                                              (-0.4, 0.12)]), 2), accent))
    fringe = np.array([(-0.45, -0.15), (-0.2, -0.3), (0.1, -0.22), (0.45, -0.2), (0.4, -0.55),
                       (-0.4, -0.55)])
    parts.append(_Part(_chaikin(fringe, 2), hair))
    white = np.array([1.0, 1.0, 1.0], np.float32)
    black = np.array([0.05, 0.05, 0.08], np.float32)
    for u in (-0.17, 0.17):
        parts.append(_Part(_ellipse(u, 0.0, 0.11, 0.075, 32), white, True, False))
        parts.append(_Part(_ellipse(u, 0.0, 0.045, 0.05, 20), black, False, False))
    mouth = _ellipse(0, 0.27, 0.13, 0.05, 24)
    parts.append(_Part(mouth[:13], np.array([0.5, 0.1, 0.1], np.float32), True, False, False))
    return parts


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """White (already cut out), a flat pastel, a two-tone gradient or comic speed lines."""
    kind = rng.choice(["white", "flat", "gradient", "rays"], p=[0.3, 0.25, 0.25, 0.2])
    if kind == "white":
        return np.ones((h, w, 3), np.float32)
    a = _PASTEL[rng.integers(len(_PASTEL))]
    if kind == "flat":
        return np.broadcast_to(a, (h, w, 3)).astype(np.float32).copy()
    b = _PASTEL[rng.integers(len(_PASTEL))]
    if kind == "gradient":
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.float32).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = np.arctan2(yy - h * rng.uniform(0.3, 0.7), xx - w * rng.uniform(0.3, 0.7))
    rays = (np.sin(ang * int(rng.integers(8, 20))) > 0)[..., None]
    return np.where(rays, a, b).astype(np.float32)


def _place(rng: np.random.Generator, full: bool, w: int, h: int, theta: float,
           scale: tuple[float, float]) -> tuple[float, np.ndarray]:
    """Head-height in px and where the canonical origin lands (full: all of it in frame;
    upper: head near the top, the frame's bottom edge cutting the body below the chest)."""
    c, s = math.cos(theta), math.sin(theta)
    ru, rv = np.array([c, -s]), np.array([s, c])
    if full:
        box = np.array([(-1.8, _TOP), (1.8, _TOP), (-1.8, _FEET), (1.8, _FEET)])
        xy = box[:, :1] * ru + box[:, 1:] * rv
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        unit = min(w * 0.94 / (hi - lo)[0], h * 0.94 / (hi - lo)[1]) * rng.uniform(*scale)
        cx = rng.uniform(w * 0.03 - lo[0] * unit, w * 0.97 - hi[0] * unit)
        cy = rng.uniform(h * 0.03 - lo[1] * unit, h * 0.97 - hi[1] * unit)
        return unit, np.array([cx, cy])
    unit = h / rng.uniform(3.4, 4.2)  # head to mid-torso fills the frame
    unit = min(unit, w / 3.2)
    cy = unit * (-_TOP) + h * rng.uniform(0.02, 0.1)
    return unit, np.array([w / 2 + rng.uniform(-0.1, 0.1) * w, cy])


def render_figure(rng: np.random.Generator, category: str, width: int, height: int,
                  style: str = "cartoon") -> FootRender:
    """One figure of ``category`` (full | upper); ``style`` cartoon (flat colours, black
    outlines), realistic (shaded, textured, muted: an outlier) or merged (no outlines on a busy
    background in the figure's own colours: an outlier). Keypoints in ``heel``/``toe``:
    eye_left, eye_right."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    full = category == "full"
    rotation_deg = float(np.clip(rng.normal(0, 10), -35, 35)) if rng.random() < 0.8 else 0.0
    theta = math.radians(rotation_deg)
    parts = _figure_parts(rng, full)
    unit, centre = _place(rng, full, width, height, theta, (0.55, 0.95))
    c, s = math.cos(theta), math.sin(theta)
    ru, rv = np.array([c, -s]), np.array([s, c])

    def to_px(p: np.ndarray) -> np.ndarray:
        return centre + unit * (p[:, :1] * ru + p[:, 1:] * rv)

    h, w = height, width
    if style == "merged":
        img = _merged_background(rng, h, w, parts)
    elif style == "realistic":
        from curate.demo.shapes import _room_background

        img = _room_background(rng, h, w)
    else:
        img = _background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    line = max(1, round(unit * 0.035))
    for part in parts:
        px = to_px(part.poly)
        alpha = _fill((h, w), [px], (0.0, 0.0))
        col = part.colour
        if style == "realistic":  # muted, shaded, textured: paint, not flat ink
            grey = float(col.mean())
            col = grey + (col - grey) * 0.35
            shade = cv2.GaussianBlur(alpha.astype(np.float32) / 255, (0, 0), unit * 0.25)
            tex = 1 + 0.12 * _smooth_noise(rng, (h, w), unit * 0.3) + 0.05 * _fine_noise(
                rng, (h, w), 1.0)
            layer = col[None, None, :] * (0.55 + 0.5 * shade * tex)[..., None]
        else:
            layer = np.broadcast_to(col, (h, w, 3))
        a = (alpha.astype(np.float32) / 255.0)[..., None]
        img = img * (1 - a) + layer * a
        if part.outline and style == "cartoon":
            pts = np.round(px * 16).astype(np.int32)
            cv2.polylines(img, [pts], part.closed, (0.03,) * 3, line, cv2.LINE_AA, 4)
        if part.body:
            np.maximum(mask, alpha, out=mask)
    if style == "realistic":
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.2)
        img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    eyes = to_px(np.array([[-0.17, 0.0], [0.17, 0.0]]))
    ys, xs = np.nonzero(mask > 127)
    bbox = ((float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
             float(ys.max() - ys.min() + 1)) if len(xs) else (0.0, 0.0, float(w), float(h)))
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    left, right = (tuple(float(v) for v in e) for e in eyes)
    return FootRender(out, mask, category, rotation_deg, bbox, left, right)


def _merged_background(rng: np.random.Generator, h: int, w: int, parts: list[_Part]
                       ) -> np.ndarray:
    """Big blobs in the figure's own colours: nothing tells figure from ground."""
    cols = [p.colour for p in parts if p.body]
    img = np.broadcast_to(cols[int(rng.integers(len(cols)))], (h, w, 3)).astype(np.float32).copy()
    size = min(h, w)
    for _ in range(int(rng.integers(14, 24))):
        col = tuple(float(v) for v in cols[int(rng.integers(len(cols)))])
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(size * rng.uniform(0.08, 0.3)), int(size * rng.uniform(0.05, 0.2)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
    return img


def render_non_human(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A car, a house, a tree or a fish in the figures' flat outlined style."""
    h, w = height, width
    img = _background(rng, h, w)
    kind = rng.choice(["car", "house", "tree", "fish"])
    size = min(h, w) * rng.uniform(0.5, 0.8)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    a, b = (_COSTUME[i] for i in rng.choice(len(_COSTUME), 2, replace=False))
    polys: list[tuple[np.ndarray, np.ndarray]] = []
    if kind == "car":
        polys += [(np.array([(-0.5, 0.0), (0.5, 0.0), (0.5, 0.2), (-0.5, 0.2)]), a),
                  (np.array([(-0.3, -0.2), (0.25, -0.2), (0.35, 0.0), (-0.4, 0.0)]), b),
                  (_ellipse(-0.3, 0.22, 0.11, 0.11), np.array([0.1, 0.1, 0.1])),
                  (_ellipse(0.3, 0.22, 0.11, 0.11), np.array([0.1, 0.1, 0.1]))]
    elif kind == "house":
        polys += [(np.array([(-0.35, -0.05), (0.35, -0.05), (0.35, 0.45), (-0.35, 0.45)]), a),
                  (np.array([(-0.45, -0.05), (0.0, -0.45), (0.45, -0.05)]), b),
                  (np.array([(-0.08, 0.2), (0.08, 0.2), (0.08, 0.45), (-0.08, 0.45)]), b)]
    elif kind == "tree":
        polys += [(np.array([(-0.06, 0.0), (0.06, 0.0), (0.08, 0.48), (-0.08, 0.48)]),
                   np.array([0.45, 0.28, 0.12])),
                  (_ellipse(0, -0.15, 0.32, 0.3), np.array([0.15, 0.6, 0.2]))]
    else:
        polys += [(_ellipse(0, 0, 0.38, 0.2), a),
                  (np.array([(0.3, 0.0), (0.5, -0.18), (0.5, 0.18)]), b),
                  (_ellipse(-0.22, -0.04, 0.04, 0.04), np.array([0.05, 0.05, 0.05]))]
    line = max(1, round(size * 0.012))
    for poly, col in polys:
        px = np.array([cx, cy]) + poly * size
        alpha = (_fill((h, w), [px], (0.0, 0.0)).astype(np.float32) / 255)[..., None]
        img = img * (1 - alpha) + col.astype(np.float32) * alpha
        cv2.polylines(img, [np.round(px * 16).astype(np.int32)], True, (0.03,) * 3, line,
                      cv2.LINE_AA, 4)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
