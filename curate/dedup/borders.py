"""The content box of an image: the photo without added bars, caption strips or app chrome.

Reposts wrap the photo in things a camera never saw: letterbox and pillarbox bars, a caption
bar above or below, the status bar, header, buttons and comments of an app screenshot. Each
is a run of lines (rows or columns) from an edge inwards that are mostly one flat colour:
text and icons are thin strokes on that colour. Trimming those runs gives the box the
candidate search embeds a second time, so a screenshot's embedding is compared by its photo,
not by its chrome.

A photographed flat area at an edge (a sky, a seamless studio backdrop) can be trimmed too;
that only adds a candidate, which verification then judges on the full images.
"""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height
FULL: Box = (0.0, 0.0, 1.0, 1.0)
_TOLERANCE = 4  # gray levels from the edge's colour that still count as that colour
_PLAIN_SHARE = 0.6  # a line is plain when at least this share of it has the edge's colour
_MAX_SIDE_SHARE = 0.45  # never trim more than this from one side
_MIN_AREA = 0.15  # a box smaller than this is a near-blank image, not a framed photo


def _plain_run(lines: np.ndarray) -> int:
    """How many of `lines` (first = outermost) are plain in the outermost line's colour."""
    if lines.shape[0] == 0 or lines.shape[1] == 0:
        return 0
    ref = int(np.bincount(lines[0].ravel(), minlength=256).argmax())
    close = np.abs(lines.astype(np.int16) - ref) <= _TOLERANCE
    plain = close.mean(axis=1) >= _PLAIN_SHARE
    return int(plain.argmin()) if not plain.all() else len(plain)


def content_box(gray: np.ndarray) -> Box:
    """Box of `gray` (uint8 2-D) left after trimming plain runs from each edge."""
    h, w = gray.shape
    if h < 8 or w < 8:
        return FULL
    top, bottom, left, right = 0, h, 0, w
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
    return (round(left / w, 4), round(top / h, 4), round(right / w, 4), round(bottom / h, 4))


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
