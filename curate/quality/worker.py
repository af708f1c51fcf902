"""Per-image work of the quality stage, run in worker processes.

One reduced-scale decode serves both the raw measurements and the report thumbnail, so an
image is decoded at most once per cache miss. Pure function of its task: it returns plain
dicts and never writes shared state (the coordinator owns the cache).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from curate import imageio
from curate.quality.properties import WorkImage, measure


@dataclass(frozen=True)
class MeasureTask:
    """What to compute for one image (only the parts missing from the cache)."""

    image_id: str
    path: Path
    need_raw: bool
    need_thumb: bool
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
    """Decode once at reduced scale; return {'raw': {...}} and/or {'thumb': 'data:...'}.

    Decoding errors are returned as {'error': reason, 'message': text} rather than raised,
    so the stage records a reason row and carries on.
    """
    try:
        img = imageio.decode(task.path, background=task.background,
                             max_pixels=task.max_pixels,
                             min_side=max(task.work_side, task.thumb_px))
    except imageio.ImageRejected as exc:
        return {"error": exc.reason, "message": exc.message}
    except OSError as exc:
        return {"error": "unreadable", "message": f"cannot read {task.path}: {exc}"}
    out: dict[str, Any] = {}
    if task.need_raw:
        out["raw"] = measure(WorkImage.from_pil(img, task.work_side))
    if task.need_thumb:
        out["thumb"] = thumbnail_data_uri(img, task.thumb_px)
    return out
