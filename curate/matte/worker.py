"""Per-image work of the matte stage, run in worker processes.

Decode at full resolution, ask the process's backend (created once per process) for the mask
(or read the one it made before: the backend's raw mask is kept, so relearning the subject
model never runs U^2-Net again), clean it with the subject model (`curate.matte.subject`),
composite on the background colour, write the composite and the mask as PNGs atomically, and
measure the mask. `training_image` gives the subject model's learning what it needs of a
sample image. An image that cannot be read raises (`ImageRejected`, `OSError`) and a matte
that cannot be made returns a `Failure`: `core.imagemap` records either as the image's
failure, so one bad image never stops the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core import atomic, imageio
from core.device import torch_device
from core.imagemap import Failure
from core.store import Store
from curate.matte import subject
from curate.matte.backends import cached_backend
from curate.matte.config import MatteConfig
from curate.matte.stats import STATS_VERSION, mask_stats
from curate.quality.worker import thumbnail_data_uri


@dataclass(frozen=True)
class MatteTask:
    image_id: str
    path: Path
    image_out: Path
    mask_out: Path
    cfg: MatteConfig
    models_dir: Path
    background: tuple[int, int, int]
    max_pixels: int
    thumb_px: int
    restat_only: bool = False  # the files exist: only measure them again (stats changed)
    raw_out: Path | None = None  # where the backend's own mask is kept (subject selection on)
    model: dict[str, Any] | None = None  # the subject model (SubjectModel.to_json)
    hints: subject.Hints = field(default_factory=subject.Hints)  # in stored-image pixels
    source_width: int = 0  # the stored image's width (the hints' scale)
    feats: np.ndarray | None = None  # the image's feature grid, when learning computed it
    subject_record: dict[str, Any] | None = None  # with restat_only: what selection recorded


#: Rows blended at a time: the 16-bit intermediates of a 4096-wide image stay near 50 MB.
BLEND_ROWS = 1024


def composite(rgb: np.ndarray, mask: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """rgb * alpha + background * (1 - alpha), rounded to uint8 (alpha = mask / 255).

    In 16-bit integers: (rgb * m + bg * (255 - m) + 127) // 255 is the rounded blend, about
    twice as fast as the float version on megapixel images. Blended in bands of rows, so the
    intermediates of a huge image never all exist at once.
    """
    out = np.empty_like(rgb)
    bg = np.asarray(background, np.uint16)
    for top in range(0, rgb.shape[0], BLEND_ROWS):
        rows = slice(top, top + BLEND_ROWS)
        m = mask[rows].astype(np.uint16)[..., None]
        blend = rgb[rows].astype(np.uint16) * m + bg * (255 - m) + 127
        out[rows] = blend // 255
    return out


def save_png(img: Image.Image, path: Path, compress_level: int) -> None:
    """PNG written to a temp file in its store's staging folder and renamed (never a partial
    file; what a killed worker leaves there, the stage sweeps at its next start)."""
    with atomic.atomic_path(path, Store.staging_dir(path)) as tmp:
        img.save(tmp, "PNG", compress_level=compress_level)


def _decode(task: MatteTask) -> Image.Image:
    """The image at most `max_side` long (raises `ImageRejected` or `OSError`)."""
    img = imageio.decode(task.path, background=task.background, max_pixels=task.max_pixels,
                         min_side=task.cfg.max_side)  # a JPEG decodes reduced when huge
    if max(img.size) > task.cfg.max_side:
        img.thumbnail((task.cfg.max_side, task.cfg.max_side), Image.Resampling.LANCZOS)
    return img


def _raw_mask(task: MatteTask, img: Image.Image) -> np.ndarray:
    """The backend's mask: the kept one when it is whole and of this size, else made now (and
    kept when the task names a place for it)."""
    if task.raw_out is not None and task.raw_out.exists():
        try:
            with Image.open(task.raw_out) as saved:
                kept = np.asarray(saved.convert("L"))
            if kept.shape == (img.size[1], img.size[0]):
                return kept
        except (OSError, SyntaxError, ValueError):
            pass
    mask = cached_backend(task.cfg, task.models_dir).mask(img)
    if task.raw_out is not None and mask.shape == (img.size[1], img.size[0]):
        save_png(Image.fromarray(mask, "L"), task.raw_out, task.cfg.png_compress_level)
    return mask


def _hints(task: MatteTask, width: int) -> subject.Hints:
    """The annotator's hints at the decoded image's scale."""
    if not task.hints or task.source_width <= 0:
        return task.hints
    return task.hints.scaled(width / task.source_width)


def matte_image(task: MatteTask) -> dict[str, Any] | Failure:
    """Matte one image: {'stats', 'stats_version', 'thumb', 'subject'...}."""
    img = _decode(task)
    rgb = np.asarray(img)
    mask, out = _saved(task) if task.restat_only else (None, None)
    record: dict[str, Any] | None = None
    if mask is None:
        mask = _raw_mask(task, img)
        if mask.shape != rgb.shape[:2]:
            return Failure("matte_failed",
                           f"mask shape {mask.shape} differs from image {rgb.shape[:2]}")
        if task.raw_out is not None:  # subject selection is on
            mask, record = _select_subject(task, rgb, mask)
    if out is None:
        out = Image.fromarray(composite(rgb, mask, task.background))
        save_png(out, task.image_out, task.cfg.png_compress_level)
        save_png(Image.fromarray(mask, "L"), task.mask_out, task.cfg.png_compress_level)
    result = {"stats": mask_stats(rgb, mask), "stats_version": STATS_VERSION,
              "thumb": thumbnail_data_uri(out, task.thumb_px), "thumb_px": task.thumb_px,
              # Sizes as written: a reused entry's files are checked against them.
              "image_bytes": task.image_out.stat().st_size,
              "mask_bytes": task.mask_out.stat().st_size}
    if record is None and task.restat_only:
        record = task.subject_record  # the files were reused: so is what selection recorded
    if record is not None:
        result["subject"] = record
    return result


def _select_subject(task: MatteTask, rgb: np.ndarray, mask: np.ndarray
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """The cleaned mask and the record of what was removed (see subject.clean)."""
    cfg = task.cfg.subject
    prob = None
    if task.model is not None:
        feats = task.feats
        if feats is None:
            feats = subject.TrainingImage.features(_network(task), rgb)
        prob = subject.SubjectModel.from_json(task.model).probability(feats)
    cleaned = subject.clean(rgb, mask, prob, _hints(task, rgb.shape[1]), cfg.work_side)
    return cleaned.alpha, cleaned.record


def _network(task: MatteTask) -> Any:
    """The subject model's feature network, on the device the params ask for."""
    return subject.load_network(task.models_dir, task.cfg.threads_per_worker,
                                torch_device(task.cfg.device, "matte"))


def training_image(task: MatteTask) -> subject.TrainingImage:
    """What learning the subject model needs of one sample image."""
    img = _decode(task)
    # The raw mask first: making it may import rembg, which resets the thread count that
    # `_network` sets, and features computed with another count differ in their last bits.
    mask = _raw_mask(task, img)
    return subject.TrainingImage.of(_network(task), np.asarray(img), mask,
                                    task.cfg.subject.train_side)


def _saved(task: MatteTask) -> tuple[np.ndarray | None, Image.Image | None]:
    """The mask and composite already on disk, or (None, None) when either cannot be read
    whole (then the image is matted again)."""
    try:
        with Image.open(task.mask_out) as saved:
            mask = np.asarray(saved.convert("L"))
        out = Image.open(task.image_out)
        out.load()
        return mask, out
    except (OSError, SyntaxError, ValueError):
        return None, None
