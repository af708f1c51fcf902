"""Per-image work of the quality stage, run in worker processes.

One reduced-scale decode serves both the raw measurements and the report thumbnail, so an
image is decoded at most once per cache miss. Pure function of its task: it returns plain
dicts and never writes shared state (the coordinator owns the cache).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core import imageio
from curate.quality.properties import WorkImage, measure


@dataclass(frozen=True)
class MeasureTask:
    """One image to measure, and how."""

    image_id: str
    path: Path
    long_side: int  # the file's longer side, in pixels (how much a JPEG decode reduced it)
    work_side: int
    thumb_px: int
    max_pixels: int
    background: tuple[int, int, int]


def thumbnail_data_uri(img: Image.Image, thumb_px: int) -> str:
    """A small inline JPEG (data: URI) whose longer side is `thumb_px`."""
    thumb = img.copy()
    thumb.thumbnail((thumb_px, thumb_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, "JPEG", quality=78, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def measure_image(task: MeasureTask) -> dict[str, Any]:
    """Decode once at reduced scale; return {'raw': {...}, 'thumb': 'data:...'}.

    Raises `ImageRejected` or `OSError` for an image that cannot be read (`core.imagemap`
    turns them into the image's failure, so the stage records a reason row and carries on).
    """
    img = imageio.decode(task.path, background=task.background, max_pixels=task.max_pixels,
                         min_side=max(task.work_side, task.thumb_px))
    # a JPEG's reduced decode divides it by a power of two
    reduction = 2 ** max(0, round(math.log2(max(1, task.long_side) / max(img.size))))
    return {"raw": measure(WorkImage.from_pil(img, task.work_side, reduction)),
            "thumb": thumbnail_data_uri(img, task.thumb_px)}
