"""Hard reposts for the demo: the copies scraped collections are full of, with exact geometry.

A repost is its parent photo after one edit, or two for ``combo``: mirrored, rotated and
zoomed (or on a larger canvas), cropped by 10-25% per side pair, captioned (a text bar or
meme text over the picture), letterboxed or pillarboxed, shown inside an app screenshot,
or colour-graded. Each edit is a 2x3 affine map from parent to copy pixels, so the copy's box
and keypoints are the parent's mapped through it and the ground truth stays exact.

Every edit draws only from the generator it is given, so a repost is a pure function of the
seed like the rest of the demo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

#: The edits, as `subkind` in the ground truth; ``combo`` chains two of the others.
REPOST_KINDS = ("mirror", "rotated", "cropped_heavy", "caption", "letterbox", "screenshot",
                "graded", "combo")
_WORDS = ("when", "the", "monday", "feet", "summer", "mood", "me", "after", "gym", "day",
          "beach", "vibes", "finally", "new", "shoes", "off", "pov", "you", "weekend", "lol")


@dataclass(frozen=True)
class Edited:
    """Pixels after the edits and the affine map from parent pixels to these."""

    rgb: np.ndarray
    matrix: np.ndarray  # 2x3, parent (x, y) -> copy (x, y)
    steps: tuple[str, ...]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 map `outer` after `inner`."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


def _text(rng: np.random.Generator, words: int) -> str:
    return " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), words)).upper()


def put_text(img: np.ndarray, text: str, box: tuple[int, int, int, int],
              colour: tuple[int, int, int], outline: tuple[int, int, int] | None) -> None:
    """Centre `text` in box (x, y, w, h), as large as fits."""
    x, y, w, h = box
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = max(0.3, min(0.8 * w / max(tw, 1), 0.6 * h / max(th, 1)))
    thick = max(1, round(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = (x + (w - tw) // 2, y + (h + th) // 2)
    if outline is not None:
        cv2.putText(img, text, org, font, scale, outline, thick * 3, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, colour, thick, cv2.LINE_AA)


def mirror(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w = rgb.shape[1]
    return np.ascontiguousarray(rgb[:, ::-1]), np.array([[-1.0, 0, w], [0, 1.0, 0]])


def rotated(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """3-10 degrees either way; zoomed to fill the frame, or on a larger plain canvas."""
    h, w = rgb.shape[:2]
    angle = float(rng.uniform(3, 10) * rng.choice([-1, 1]))
    a = math.radians(abs(angle))
    if rng.random() < 0.5:  # "straightened": zoom so no corner is empty
        scale = math.cos(a) + max(w / h, h / w) * math.sin(a)
        size = (w, h)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    else:  # tilted on a canvas that holds the whole photo
        size = (math.ceil(w * math.cos(a) + h * math.sin(a)),
                math.ceil(w * math.sin(a) + h * math.cos(a)))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    fill = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    out = cv2.warpAffine(rgb, m, size, flags=cv2.INTER_LINEAR, borderValue=fill)
    return out, m


def cropped_heavy(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """10-25% of the width and of the height cut, split unevenly between the two sides."""
    h, w = rgb.shape[:2]
    fx, fy = rng.uniform(0.10, 0.25, 2)
    left, top = int(w * fx * rng.uniform(0, 1)), int(h * fy * rng.uniform(0, 1))
    right, bottom = left + w - int(w * fx), top + h - int(h * fy)
    return (np.ascontiguousarray(rgb[top:bottom, left:right]),
            np.array([[1.0, 0, -left], [0, 1.0, -top]]))


def caption(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A caption bar above or below, or meme text (white, black outline) over the picture."""
    h, w = rgb.shape[:2]
    if rng.random() < 0.35:
        out = rgb.copy()
        band = int(h * rng.uniform(0.10, 0.16))
        put_text(out, _text(rng, 3), (0, int(h * 0.02), w, band), (255, 255, 255), (0, 0, 0))
        put_text(out, _text(rng, 3), (0, h - band - int(h * 0.02), w, band), (255, 255, 255),
                  (0, 0, 0))
        return out, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    bar = int(h * rng.uniform(0.12, 0.25))
    light = rng.random() < 0.7
    bg, fg = ((255, 255, 255), (0, 0, 0)) if light else ((0, 0, 0), (255, 255, 255))
    out = np.empty((h + bar, w, 3), np.uint8)
    out[:] = bg
    top = rng.random() < 0.6
    y0 = bar if top else 0
    out[y0:y0 + h] = rgb
    put_text(out, _text(rng, int(rng.integers(3, 7))), (0, 0 if top else h, w, bar), fg, None)
    return out, np.array([[1.0, 0, 0], [0, 1.0, y0]])


def letterbox(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The photo fitted into a square, 16:9, 9:16 or 4:5 frame with black, white or blurred
    bars (whichever frame differs most from its own shape)."""
    h, w = rgb.shape[:2]
    aspects = [a for a in (1.0, 16 / 9, 9 / 16, 4 / 5) if abs(math.log(a * h / w)) > 0.2]
    aspect = float(aspects[int(rng.integers(0, len(aspects)))]) if aspects else 16 / 9
    long = max(w, h) * rng.uniform(0.8, 1.2)
    cw, ch = (round(long), round(long / aspect)) if aspect >= 1 else (round(long * aspect),
                                                                          round(long))
    s = min(cw / w, ch / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    x0, y0 = (cw - nw) // 2, (ch - nh) // 2
    style = rng.choice(["black", "white", "blur"])
    if style == "blur":
        out = cv2.GaussianBlur(cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_AREA), (0, 0),
                               max(cw, ch) / 30)
    else:
        out = np.full((ch, cw, 3), 0 if style == "black" else 255, np.uint8)
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, np.array([[nw / w, 0, x0], [0, nh / h, y0]])


def screenshot(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A phone screenshot of a post: status bar, app header, the photo, buttons, comments."""
    h, w = rgb.shape[:2]
    sw = int(rng.integers(540, 900))
    sh = int(sw * rng.uniform(1.9, 2.17))
    dark = rng.random() < 0.4
    bg, fg, muted = (((18, 18, 18), (235, 235, 235), (90, 90, 90)) if dark
                     else ((255, 255, 255), (20, 20, 20), (200, 200, 200)))
    out = np.full((sh, sw, 3), bg, np.uint8)
    status, header = int(sh * 0.035), int(sh * 0.07)
    put_text(out, "9:41", (0, 0, sw // 5, status), fg, None)
    cv2.rectangle(out, (sw - 70, status // 3), (sw - 30, 2 * status // 3), fg, -1)
    cv2.circle(out, (int(sw * 0.08), status + header // 2), header // 3, muted, -1)
    put_text(out, "@" + _text(rng, 1).lower(), (int(sw * 0.15), status, sw // 3, header), fg,
              None)
    margin = int(sw * rng.uniform(0.0, 0.04))
    nw = sw - 2 * margin
    nh = max(1, min(round(h * nw / w), int(sh * 0.62)))
    nw = max(1, round(w * nh / h))
    x0, y0 = (sw - nw) // 2, status + header
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    y = y0 + nh + int(sh * 0.015)
    for k in range(4):  # like, comment, share, save
        cx = int(sw * (0.07 + 0.1 * k)) if k < 3 else int(sw * 0.93)
        cv2.circle(out, (cx, y + 18), 14, fg, 2, cv2.LINE_AA)
    y += 48
    while y + 24 < sh:
        put_text(out, _text(rng, int(rng.integers(3, 8))).lower(), (int(sw * 0.04), y,
                  int(sw * rng.uniform(0.4, 0.9)), 24), fg if rng.random() < 0.5 else muted,
                  None)
        y += int(rng.integers(30, 46))
    return out, np.array([[nw / w, 0, x0], [0, nh / h, y0]])


def graded(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A filter: gamma, contrast, saturation and a warm or cool tint."""
    img = rgb.astype(np.float32) / 255.0
    img = img ** rng.uniform(0.7, 1.4)
    img = (img - 0.5) * rng.uniform(0.8, 1.3) + 0.5
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.4, 1.6)
    tint = rng.uniform(0.04, 0.12) * rng.choice([-1, 1])
    img = img + np.array([tint, tint * 0.3, -tint], np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, np.array([[1.0, 0, 0], [0, 1.0, 0]])


_EDITS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "mirror": mirror, "rotated": rotated, "cropped_heavy": cropped_heavy, "caption": caption,
    "letterbox": letterbox, "screenshot": screenshot, "graded": graded}


def make_repost(rgb: np.ndarray, subkind: str, rng: np.random.Generator) -> Edited:
    """Apply the edit `subkind` (``combo``: two different edits, in random order)."""
    if subkind == "combo":
        names = list(rng.choice(list(_EDITS), size=2, replace=False))
    else:
        names = [subkind]
    matrix = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for name in names:
        rgb, m = _EDITS[name](rgb, rng)
        matrix = _compose(m, matrix)
    return Edited(rgb, matrix, tuple(str(n) for n in names))


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n, 2) parent pixel coordinates -> copy pixel coordinates."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]
