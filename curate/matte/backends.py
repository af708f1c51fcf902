"""Matting backends: each turns an RGB image into an alpha mask (uint8, 0 = background).

- `rembg`: the U^2-Net models through rembg's own session classes (the same preprocessing and
  postprocessing as the `rembg` command, so masks match it), with optional alpha matting.
  Models come from the offline models folder; nothing is downloaded.
- `border_key`: for plain-background studio shots: the background colours are learned from
  the image border and everything far enough from them (CIE Delta E) is foreground.
- `grabcut`: OpenCV GrabCut seeded with a centred rectangle; needs no model at all.

`make_backend(cfg, models_dir)` is the factory; `cached_backend` keeps one instance per worker
process (loading an ONNX session costs far more than one image).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from core import models
from core.device import onnx_providers
from curate.matte.config import MatteConfig
from curate.registry import name_registry


class MatteBackend(ABC):
    """One matting method; `settings(cfg)` lists what changes its output (the cache key)."""

    name: ClassVar[str]

    def __init__(self, cfg: MatteConfig, models_dir: Path) -> None:
        self.cfg = cfg
        self.models_dir = Path(models_dir)

    @classmethod
    @abstractmethod
    def settings(cls, cfg: MatteConfig) -> dict[str, Any]:
        """The settings that determine the mask (JSON-serialisable), without loading anything."""

    @abstractmethod
    def mask(self, img: Image.Image) -> np.ndarray:
        """Alpha mask of `img` (RGB) as uint8 HxW, 255 = foreground."""


BACKENDS: dict[str, type[MatteBackend]] = {}
register = name_registry(BACKENDS, "matte backend")  # class decorator: a `matte.method` value


def backend_class(cfg: MatteConfig) -> type[MatteBackend]:
    """The backend class params `matte.method` names."""
    try:
        return BACKENDS[cfg.method]
    except KeyError:
        raise ValueError(f"matte.method: unknown {cfg.method!r}; known: "
                         f"{', '.join(BACKENDS)}") from None


def make_backend(cfg: MatteConfig, models_dir: Path) -> MatteBackend:
    """The factory: a ready backend for `cfg` (loads its model, if any)."""
    return backend_class(cfg)(cfg, models_dir)


_PROCESS_BACKENDS: dict[tuple[MatteConfig, str], MatteBackend] = {}


def cached_backend(cfg: MatteConfig, models_dir: Path) -> MatteBackend:
    """One backend per (config, models folder) per process, reused for all its images."""
    key = (cfg, str(Path(models_dir).resolve()))
    backend = _PROCESS_BACKENDS.get(key)
    if backend is None:
        backend = _PROCESS_BACKENDS[key] = make_backend(cfg, models_dir)
    return backend


# ---------------------------------------------------------------------------- rembg


@register
class RembgBackend(MatteBackend):
    """U^2-Net (u2net / u2netp) through rembg's session classes, offline."""

    name = "rembg"

    def __init__(self, cfg: MatteConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        # Fail now, with the command that fixes it, rather than inside rembg's downloader.
        models.require(cfg.model, self.models_dir)
        models.configure_environment(self.models_dir)
        # require() has just verified the file against the same md5 (cached in its sidecar);
        # without this rembg's pooch would hash the 176 MB u2net file again in every worker.
        os.environ["MODEL_CHECKSUM_DISABLED"] = "1"
        import onnxruntime as ort
        from rembg.sessions import sessions

        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.threads_per_worker
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        ort.set_default_logger_severity(3)
        self.session = sessions[cfg.model](cfg.model, options,
                                           providers=onnx_providers(cfg.device, "matte"))

    @classmethod
    def settings(cls, cfg: MatteConfig) -> dict[str, Any]:
        am = cfg.alpha_matting
        return {"model": cfg.model, "post_process": cfg.post_process_mask,
                "alpha_matting": [am.foreground_threshold, am.background_threshold,
                                  am.erode_size] if am.enabled else None}

    def mask(self, img: Image.Image) -> np.ndarray:
        from rembg.bg import alpha_matting_cutout, post_process

        (mask,) = self.session.predict(img)[:1]
        if self.cfg.post_process_mask:
            mask = Image.fromarray(post_process(np.array(mask)))
        am = self.cfg.alpha_matting
        if am.enabled:
            try:
                cutout = alpha_matting_cutout(img, mask, am.foreground_threshold,
                                              am.background_threshold, am.erode_size)
                mask = cutout.getchannel("A")
            except ValueError:
                pass  # rembg's own fallback: keep the network's mask
        return np.asarray(mask, dtype=np.uint8)


# ----------------------------------------------------------------------- helpers


def _work_array(img: Image.Image, work_side: int) -> np.ndarray:
    """RGB array with its shorter side at most `work_side` (area-averaged)."""
    arr = np.asarray(img.convert("RGB"))
    h, w = arr.shape[:2]
    scale = min(1.0, work_side / min(h, w))
    if scale < 1.0:
        arr = cv2.resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _to_full(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float alpha 0..1 at working size -> uint8 mask at the image's (w, h)."""
    if alpha.shape[1] != size[0] or alpha.shape[0] != size[1]:
        alpha = cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)


def _keep_solid(fg: np.ndarray, min_area: float = 0.005) -> np.ndarray:
    """Open/close, drop specks smaller than `min_area` of the image, fill enclosed holes."""
    k = max(3, (min(fg.shape) // 100) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area * fg.size
    fg = keep[labels].astype(np.uint8)
    # holes = background regions not connected to the border
    inv = (1 - fg).astype(np.uint8)
    padded = np.pad(inv, 1, constant_values=1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    holes = (flood[1:-1, 1:-1] == 1)
    return (fg.astype(bool) | holes)


# ------------------------------------------------------------------- border keying


def _border_key_mask(arr: np.ndarray, border: float, tolerance: float) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """(foreground bool mask, border band bool mask) from the border's colours.

    The border band's pixels are clustered (k-means in CIE L*a*b*, a few clusters so that
    gradients and vignetting are covered); a pixel farther than `tolerance` (Delta E) from
    every cluster centre is foreground. Specks are dropped and enclosed holes filled.
    """
    lab = cv2.cvtColor(arr.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    h, w = lab.shape[:2]
    band = max(1, round(border * min(h, w)))
    edge = np.zeros((h, w), bool)
    edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
    samples = lab[edge].reshape(-1, 3).astype(np.float32)
    k = min(4, len(samples))
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    flat = lab.reshape(-1, 1, 3)
    dist = np.sqrt(((flat - centres[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    return _keep_solid((dist > tolerance).reshape(h, w)), edge


@register
class BorderKeyBackend(MatteBackend):
    """Plain-background keying from the colours found along the image border."""

    name = "border_key"

    @classmethod
    def settings(cls, cfg: MatteConfig) -> dict[str, Any]:
        b = cfg.border_key
        return {"border": b.border, "tolerance": b.tolerance, "feather_px": b.feather_px,
                "work_side": b.work_side}

    def mask(self, img: Image.Image) -> np.ndarray:
        b = self.cfg.border_key
        fg, _ = _border_key_mask(_work_array(img, b.work_side), b.border, b.tolerance)
        alpha = fg.astype(np.float32)
        if b.feather_px > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), b.feather_px)
        return _to_full(alpha, img.size)


# --------------------------------------------------------------------------- GrabCut


@register
class GrabCutBackend(MatteBackend):
    """OpenCV GrabCut, seeded by border keying (or a centred rectangle when that finds nothing).

    A model-free fallback: the border band is certain background, border keying's foreground
    is probable foreground, the rest probable background; GrabCut's colour models then settle
    the edges that a single colour distance gets wrong (shadows, colours close to the
    background's).
    """

    name = "grabcut"

    @classmethod
    def settings(cls, cfg: MatteConfig) -> dict[str, Any]:
        g, b = cfg.grabcut, cfg.border_key
        return {"margin": g.margin, "iterations": g.iterations, "work_side": g.work_side,
                "seed": [b.border, b.tolerance]}

    def mask(self, img: Image.Image) -> np.ndarray:
        g, b = self.cfg.grabcut, self.cfg.border_key
        arr = _work_array(img, g.work_side)
        h, w = arr.shape[:2]
        seed, edge = _border_key_mask(arr, b.border, b.tolerance)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
        if 0.002 < seed.mean() < 0.95:
            labels = np.where(seed, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
            labels[edge] = cv2.GC_BGD
            cv2.grabCut(bgr, labels, None, bgd, fgd, g.iterations, cv2.GC_INIT_WITH_MASK)
        else:
            mx, my = max(1, round(g.margin * w)), max(1, round(g.margin * h))
            rect = (mx, my, max(1, w - 2 * mx), max(1, h - 2 * my))
            labels = np.zeros((h, w), np.uint8)
            cv2.grabCut(bgr, labels, rect, bgd, fgd, g.iterations, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
        alpha = cv2.GaussianBlur(_keep_solid(fg).astype(np.float32), (0, 0), 1.0)
        return _to_full(alpha, img.size)
