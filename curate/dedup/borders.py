"""The content box of an image: the photo without added bars, caption strips or app chrome.

Reposts wrap the photo in things a camera never saw: letterbox and pillarbox bars, a caption
bar above or below, the status bar, header, buttons and comments of an app screenshot. Each
is a run of lines (rows or columns) from an edge inwards that are mostly one flat colour:
text and icons are thin strokes on that colour. Trimming those runs gives the box the
candidate search embeds a second time, so a screenshot's embedding is compared by its photo,
not by its chrome.

The other common frame is a blur fill: the photo stretched over the whole frame and blurred,
with the photo itself centred on it (how apps fit a photo into a square or 9:16 post). It is
not flat, but it meets the photo at two seams, steps in the pixels that run the full height
(or width) at mirrored distances from the edges, and it holds less fine detail than the photo
between them.

A photographed flat area at an edge (a sky, a seamless studio backdrop) can be trimmed too;
that only adds a candidate, which verification then judges on the full images.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.imageio import shrink

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height
FULL: Box = (0.0, 0.0, 1.0, 1.0)
_TOLERANCE = 4  # gray levels from the edge's colour that still count as that colour
_PLAIN_SHARE = 0.6  # a line is plain when at least this share of it has the edge's colour
_MAX_SIDE_SHARE = 0.45  # never trim more than this from one side
_MIN_AREA = 0.15  # a box smaller than this is a near-blank image, not a framed photo
_SEAM_STEP = 4.0  # a seam's mean step across it is this many times its neighbourhood's ...
_SEAM_LEVELS = 2.0  # ... and at least this many gray levels ...
_SEAM_LINES = 0.6  # ... and a step in at least this share of the lines it crosses
_SEAM_NEIGHBOURS = 10  # lines each side that make the neighbourhood
_SEAM_SYMMETRY = 0.02  # the two seams' distances from their edges differ by at most this share
_MIN_BAND = 0.2  # the photo between the seams is at least this share of the side
_FILL_DETAIL = 0.5  # the fill has less than this share of the photo's fine detail
_FILL_SIDE = 512  # a blur fill is looked for on the image scaled to this longer side


def _plain_run(lines: np.ndarray) -> int:
    """How many of `lines` (first = outermost) are plain in the outermost line's colour."""
    if lines.shape[0] == 0 or lines.shape[1] == 0:
        return 0
    ref = int(np.bincount(lines[0].ravel(), minlength=256).argmax())
    close = np.abs(lines.astype(np.int16) - ref) <= _TOLERANCE
    plain = close.mean(axis=1) >= _PLAIN_SHARE
    return int(plain.argmin()) if not plain.all() else len(plain)


def _seams(gray: np.ndarray) -> np.ndarray:
    """Columns c where a step between c - 1 and c runs down (nearly) the whole height,
    judged against the smoother side's steps (the fill's; the photo's may be all texture)."""
    step = np.abs(np.diff(gray, axis=1))
    profile = step.mean(axis=0)
    k = _SEAM_NEIGHBOURS
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(profile, k, mode="edge"), k)
    before, after = np.median(windows[:-k - 1], axis=1), np.median(windows[k + 1:], axis=1)
    local = np.minimum(before, after)
    strong = (profile >= _SEAM_STEP * local) & (profile >= _SEAM_LEVELS)
    strong[:k] = strong[len(strong) - k:] = False  # a whole neighbourhood on each side
    cols = np.flatnonzero(strong)
    crossed = (step[:, cols] >= np.maximum(_SEAM_LEVELS, 2 * local[cols])).mean(axis=0)
    return cols[crossed >= _SEAM_LINES] + 1


def blur_fill(gray: np.ndarray) -> tuple[int, int] | None:
    """(left, right) columns of a photo centred on a blur fill (module docstring), or None."""
    g = gray.astype(np.float32)
    w = g.shape[1]
    if w < 4 * _SEAM_NEIGHBOURS:
        return None
    seams = _seams(g)
    detail = np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean(axis=0)
    bands = []
    for left in seams[seams >= max(0.03 * w, _SEAM_NEIGHBOURS)]:
        for right in seams[seams - left >= _MIN_BAND * w]:
            if abs(left - (w - right)) > _SEAM_SYMMETRY * w + 1:
                continue
            inside = detail[left + 2:right - 2].mean()
            fill = np.concatenate([detail[:left - 2], detail[right + 2:]]).mean()
            if fill < _FILL_DETAIL * inside:
                bands.append((int(left), int(right)))
    return max(bands, key=lambda band: band[1] - band[0], default=None)


def content_box(gray: np.ndarray) -> Box:
    """Box of `gray` (uint8 2-D) inside the seams of a blur fill, less the plain runs at each
    edge of what is left (a screenshot's chrome inside the fill). The blur fill is looked for
    first: its dark or pale ends can be plain enough to trim, which would hide its seams."""
    h, w = gray.shape
    if h < 8 or w < 8:
        return FULL
    top, bottom, left, right = 0, h, 0, w
    small, scale = shrink(gray, _FILL_SIDE)  # seams stay steps at this size, at far less cost
    if (cols := blur_fill(small)) is not None:
        left, right = (min(w, round(c / scale)) for c in cols)
    elif (rows := blur_fill(np.ascontiguousarray(small.T))) is not None:
        top, bottom = (min(h, round(r / scale)) for r in rows)
    for _ in range(2):  # chrome rows first, then margins beside the photo, then rows again
        cap_y, cap_x = int(h * _MAX_SIDE_SHARE), int(w * _MAX_SIDE_SHARE)
        top += min(cap_y, _plain_run(gray[top:bottom, left:right]))
        bottom -= min(cap_y, _plain_run(gray[top:bottom, left:right][::-1]))
        left += min(cap_x, _plain_run(gray[top:bottom, left:right].T))
        right -= min(cap_x, _plain_run(gray[top:bottom, left:right].T[::-1]))
        if bottom - top < 8 or right - left < 8:
            return FULL
    if (bottom - top) * (right - left) < _MIN_AREA * h * w:
        return FULL
    return _fraction((left, top, right, bottom), w, h)


def _fraction(pixels: tuple[int, int, int, int], w: int, h: int) -> Box:
    x0, y0, x1, y1 = pixels
    return (round(x0 / w, 4), round(y0 / h, 4), round(x1 / w, 4), round(y1 / h, 4))


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
