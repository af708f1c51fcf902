"""Raw per-image measurements (properties), one small class each, registered by name.

Why properties are separate from checks: a property is a physical measurement of the pixels
(sharpness, dark fraction, noise ...) that costs a decode; a check is a judgement about it
(is it blurry?) that depends on thresholds. Only properties are cached, so changing a
judgement never touches pixels.

Every property is measured on a *working image*: the image decoded at reduced scale
(`imageio.decode(min_side=...)`, JPEG DCT scaling) and then area-resized so its shorter side
is `work_side` pixels. Measuring at a fixed working size makes scale-dependent measurements
(Laplacian variance, noise) comparable between a 300 px and a 3000 px photo, and is several
times cheaper than full-resolution decoding.

Add a property: subclass `Property`, set `name`, `version` and `columns`, implement `compute`,
decorate with `@register`. Bump `version` whenever a change alters its output: the cache key
includes every property's version, so stale values are never reused.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from curate.registry import name_registry

#: Luma below this (0..255) counts as dark, at or above `BRIGHT_LEVEL` as blown out.
DARK_LEVEL = 40.0
BRIGHT_LEVEL = 250.0
#: A backdrop is a colour that holds this share of the border pixels ...
BACKDROP_BORDER_SHARE = 0.5
#: ... and every border-connected pixel within this many levels (any channel) of it.
BACKDROP_TOLERANCE = 12.0
#: A clipped white region is a backdrop only when what borders it differs from it by at least
#: this many levels (median over a 2-pixel ring, largest channel difference): a quarter of
#: the range.
BACKDROP_EDGE_STEP = 64.0
#: Rec. 601 luma of an RGB colour (as `WorkImage.gray8` weighs it).
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
#: Below this share of the frame left after the backdrop, the whole frame is judged.
SUBJECT_MIN_SHARE = 0.05
#: JPEG's DCT block side, in the file's pixels.
JPEG_BLOCK = 8
#: Blocking is measured on at most this many pixels square at the middle of the decoded image
#: (64 x 64 blocks at the file's scale).
BLOCKING_WINDOW = 512


class WorkImage:
    """An image at working size, with the derived arrays properties share (computed once).

    Most exposure figures come from one 256-bin luma histogram, so a percentile costs a
    cumulative sum instead of a sort of every pixel.
    """

    def __init__(self, rgb: np.ndarray, decoded_gray: np.ndarray | None = None,
                 reduction: int = 1) -> None:
        """`rgb` at working size; `decoded_gray` the luma as decoded, before any resize (at
        most `BLOCKING_WINDOW` square), `reduction` times smaller than the file (a JPEG's DCT
        scaling). Without it, `rgb` is taken as the image at the file's own scale."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.shape} {rgb.dtype}")
        self.rgb = np.ascontiguousarray(rgb)
        self._decoded_gray = decoded_gray
        self.reduction = reduction

    @classmethod
    def from_pil(cls, img: Image.Image, work_side: int, reduction: int = 1) -> WorkImage:
        """Area-resize so the shorter side is `work_side` (never upscale). `reduction`: how
        many times smaller than the file `img` was decoded (1, 2, 4 or 8)."""
        arr = np.asarray(img.convert("RGB"))
        h, w = arr.shape[:2]
        y, x = max(0, (h - BLOCKING_WINDOW) // 2), max(0, (w - BLOCKING_WINDOW) // 2)
        window = arr[y:y + BLOCKING_WINDOW, x:x + BLOCKING_WINDOW]
        decoded_gray = cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2GRAY)
        short = min(h, w)
        if short > work_side:
            scale = work_side / short
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
        return cls(arr, decoded_gray, reduction)

    @property
    def decoded_gray(self) -> np.ndarray:
        """Luma as decoded (`reduction` times smaller than the file), before resizing."""
        return self.gray8 if self._decoded_gray is None else self._decoded_gray

    @cached_property
    def gray8(self) -> np.ndarray:
        """Rec. 601 luma, uint8."""
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)

    @cached_property
    def hist(self) -> np.ndarray:
        """Luma histogram (256 bins) as fractions of the pixel count."""
        counts = np.bincount(self.gray8.ravel(), minlength=256).astype(np.float64)
        return counts / counts.sum()

    @cached_property
    def luma_mean(self) -> float:
        """Mean luma in levels 0..255, from the histogram."""
        return float((self.hist * _LEVELS).sum())

    @cached_property
    def luma_variance(self) -> float:
        """Variance of luma in levels squared, from the histogram."""
        return float((self.hist * (_LEVELS - self.luma_mean) ** 2).sum())

    def luma_percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of luma, in levels 0..255, from the histogram."""
        return float(np.searchsorted(np.cumsum(self.hist), q / 100.0))

    @cached_property
    def backdrop(self) -> np.ndarray:
        """Pixels of a flat backdrop: a studio sweep, the paper of a drawing.

        The colour (in 8-level steps) that at least `BACKDROP_BORDER_SHARE` of the border
        pixels share; every pixel within `BACKDROP_TOLERANCE` levels of its mean, in a region
        that touches the border. All False when no colour holds the border.

        A clipped white region (luma at least `BRIGHT_LEVEL`) is either paper or a white sweep,
        or the blown-out highlights of an over-exposed photo. Paper ends where an outline or a
        subject's silhouette begins, so the pixels around it differ from it by at least
        `BACKDROP_EDGE_STEP`; blown highlights shade off into nearly clipped skin, wall or sky.
        A clipped region without that edge is part of the scene: all False.
        """
        rgb = self.rgb
        border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
        codes = (border[:, 0] // 8).astype(np.int32) * 1024 + (border[:, 1] // 8) * 32 + (
            border[:, 2] // 8)
        counts = np.bincount(codes)
        mode = int(counts.argmax())
        if counts[mode] < BACKDROP_BORDER_SHARE * len(codes):
            return np.zeros(rgb.shape[:2], dtype=bool)
        colour = border[codes == mode].mean(axis=0)
        near = (np.abs(rgb.astype(np.float32) - colour).max(axis=2) <= BACKDROP_TOLERANCE)
        _, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=4)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        region = np.isin(labels, edge[edge > 0])
        ring = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ring &= ~region
        clipped = float(colour @ _LUMA_WEIGHTS) >= BRIGHT_LEVEL
        if clipped and ring.any():
            step = np.abs(rgb[ring].astype(np.float32) - colour).max(axis=1)
            if float(np.median(step)) < BACKDROP_EDGE_STEP:
                return np.zeros(rgb.shape[:2], dtype=bool)
        return region

    @cached_property
    def subject_hist(self) -> np.ndarray:
        """Luma histogram (fractions) of what is not `backdrop`; the whole image's when less
        than `SUBJECT_MIN_SHARE` of it is left (a blank frame is judged whole)."""
        keep = ~self.backdrop
        if keep.mean() < SUBJECT_MIN_SHARE:
            return self.hist
        counts = np.bincount(self.gray8[keep], minlength=256).astype(np.float64)
        return counts / counts.sum()

    @cached_property
    def lab_mean(self) -> np.ndarray:
        """Mean CIE L*a*b* (L 0..100, a/b about -128..127), from a 1/4-scale copy."""
        h, w = self.rgb.shape[:2]
        small = cv2.resize(self.rgb, (max(1, w // 4), max(1, h // 4)),
                           interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        return lab.reshape(-1, 3).mean(axis=0)


class Property(ABC):
    """One raw measurement family; `compute` returns a value for each of `columns`."""

    name: ClassVar[str]
    version: ClassVar[int]
    columns: ClassVar[tuple[str, ...]]

    @abstractmethod
    def compute(self, img: WorkImage) -> dict[str, float]:
        """Measure `img`; keys are exactly `columns`, values finite floats."""


PROPERTIES: dict[str, type[Property]] = {}
register = name_registry(PROPERTIES, "property")  # class decorator: a property for `measure`


_LEVELS = np.arange(256, dtype=np.float64)


#: Side of the square tiles `sharpness_peak` is measured on, at working size (half-overlapping).
SHARPNESS_TILE = 32
#: A tile whose luma varies less than this (standard deviation, levels) holds no edge to judge.
SHARPNESS_MIN_STD = 6.0
#: Which tile counts: the 97th percentile of tile scores, the image's sharpest few percent.
SHARPNESS_PERCENTILE = 97.0


def _relative_laplacian(lap_var: np.ndarray | float, gray_var: np.ndarray | float) -> np.ndarray:
    """log10 of Laplacian variance over luma variance: the share of contrast in fine detail."""
    return np.log10((np.asarray(lap_var) + 1e-3) / (np.asarray(gray_var) + 1.0))


def _block_moments(a: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of `a` and of its square over each b x b block (a ragged edge is left out)."""
    h, w = (a.shape[0] // b) * b, (a.shape[1] // b) * b
    blocks = a[:h, :w].astype(np.float64).reshape(h // b, b, w // b, b)
    return blocks.sum(axis=(1, 3)), (blocks * blocks).sum(axis=(1, 3))


def _tile_variances(a: np.ndarray, tile: int) -> np.ndarray:
    """Variance of `a` over every `tile`-square window at a stride of tile/2, in one pass.

    Sums over (tile/2)-blocks add up, four at a time, to the windows: linear in the pixel
    count, no Python loop over tiles."""
    s1, s2 = _block_moments(a, tile // 2)

    def windows(s: np.ndarray) -> np.ndarray:
        return s[:-1, :-1] + s[1:, :-1] + s[:-1, 1:] + s[1:, 1:]

    n = float(tile * tile)
    mean = windows(s1) / n
    return np.maximum(windows(s2) / n - mean * mean, 0.0)


@register
class Sharpness(Property):
    """Variance of the Laplacian (classic focus measure), raw and where the image has detail.

    `sharpness` is log10 of the Laplacian variance at working size: it also falls with
    exposure, so no check judges it (the report shows it).

    `sharpness_peak` asks whether *any* part of the image is in focus, which is what blur takes
    away. Over half-overlapping 32 px tiles that hold an edge (luma standard deviation at least
    6 levels), it takes log10 of Laplacian variance over luma variance, a contrast- and
    exposure-free measure of how much of the tile's contrast sits in fine detail, and keeps
    the 97th percentile. A whole-image ratio (the previous measure) is dominated by whatever
    fills most of the frame: a small, sharp subject on a smooth backdrop scored as blurry. An
    image with no such tile scores the whole-image ratio.
    """

    name = "sharpness"
    version = 3
    columns = ("sharpness", "sharpness_peak")

    def compute(self, img: WorkImage) -> dict[str, float]:
        lap = cv2.Laplacian(img.gray8, cv2.CV_32F, ksize=3)
        _, std = cv2.meanStdDev(lap)
        lap_var = float(std[0, 0]) ** 2
        gray_var = _tile_variances(img.gray8, SHARPNESS_TILE)
        edged = gray_var >= SHARPNESS_MIN_STD ** 2
        if edged.any():
            scores = _relative_laplacian(_tile_variances(lap, SHARPNESS_TILE)[edged],
                                         gray_var[edged])
            peak = float(np.percentile(scores, SHARPNESS_PERCENTILE))
        else:
            peak = float(_relative_laplacian(lap_var, img.luma_variance))
        return {"sharpness": math.log10(lap_var + 1e-3), "sharpness_peak": peak}


@register
class Exposure(Property):
    """Mean brightness, dark and blown-out pixel fractions, and the 5th/95th/99th luma
    percentiles.

    The percentiles describe exposure without being fooled by a background: a studio shot on
    black has a large dark fraction but bright highlights, while an under-exposed photo has
    no highlights at all. The 99th percentile finds the highlights of a subject down to 1% of
    the frame (a small foot on a dark sweep; the 95th needs 5%). `subject_bright_fraction`
    counts blown-out pixels off the flat backdrop (`WorkImage.backdrop`): a figure drawn on
    white paper or a product on a white sweep has a white frame, not a blown-out subject.
    """

    name = "exposure"
    version = 5
    columns = ("brightness", "dark_fraction", "bright_fraction", "subject_bright_fraction",
               "luma_p05", "luma_p95", "luma_p99")

    def compute(self, img: WorkImage) -> dict[str, float]:
        h = img.hist
        return {
            "brightness": img.luma_mean / 255.0,
            "dark_fraction": float(h[: int(DARK_LEVEL)].sum()),
            "bright_fraction": float(h[int(BRIGHT_LEVEL):].sum()),
            "subject_bright_fraction": float(img.subject_hist[int(BRIGHT_LEVEL):].sum()),
            "luma_p05": img.luma_percentile(5) / 255.0,
            "luma_p95": img.luma_percentile(95) / 255.0,
            "luma_p99": img.luma_percentile(99) / 255.0,
        }


def block_edge_excess(gray: np.ndarray, reduction: int) -> float:
    """How far luma steps across JPEG block edges exceed the steps at every other offset, in
    levels: the mean absolute difference between neighbours, by offset modulo the block
    period, edge offset minus the mean of the others; the weaker of the two directions.

    Measured at half a block (4 px): an image decoded at the file's scale is first averaged
    over 2x2 pixels (on the phase that shows the grid best), as a JPEG decoded at half scale
    already is; a quarter-scale decode is measured at 2 px; at an eighth a block is one pixel,
    nothing is left to measure (NaN). The edge offset is found, not assumed: a crop moves the
    grid. NaN when fewer than 4 blocks fit either way.
    """
    g = gray.astype(np.float32)
    if reduction == 1:  # the 2x2 means at every offset; each phase is every other one of them
        means = (g[:-1, :-1] + g[1:, :-1] + g[:-1, 1:] + g[1:, 1:]) * 0.25
        phases = [block_edge_excess(means[oy::2, ox::2], 2) for oy in (0, 1) for ox in (0, 1)]
        return max((v for v in phases if math.isfinite(v)), default=math.nan)
    period = JPEG_BLOCK // reduction
    if period < 2:
        return math.nan
    excess = []
    for steps in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        n = len(steps) // period * period
        if n < 4 * period:
            return math.nan
        by_offset = steps[:n].reshape(-1, period).mean(axis=0)
        edge = int(by_offset.argmax())
        excess.append(float(by_offset[edge] - np.delete(by_offset, edge).mean()))
    return min(excess)


@register
class Blocking(Property):
    """JPEG blocking (`block_edge_excess`): the 8x8 grid a heavily compressed copy shows.

    Measured on the image as decoded, before the resize to working size blurs the grid away,
    within `BLOCKING_WINDOW` at its middle. A JPEG whose shorter side is at least 8 times
    `work_side` (or `thumb_px`, when larger) is decoded at an eighth of its scale, where no grid
    is left: NaN, never flagged.
    """

    name = "blocking"
    version = 2
    columns = ("blocking",)

    def compute(self, img: WorkImage) -> dict[str, float]:
        return {"blocking": block_edge_excess(img.decoded_gray, img.reduction)}


@register
class Contrast(Property):
    """RMS contrast: standard deviation of luma, 0..1."""

    name = "contrast"
    version = 2
    columns = ("contrast",)

    def compute(self, img: WorkImage) -> dict[str, float]:
        return {"contrast": math.sqrt(img.luma_variance) / 255.0}


def _entropy(hist: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram of fractions."""
    p = hist[hist > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0


@register
class Entropy(Property):
    """Shannon entropy of the luma histogram in bits (0..8): low means little information.

    `subject_entropy` leaves the flat backdrop out (`WorkImage.backdrop`): a large plain
    background lowers the whole frame's entropy however much the subject holds.
    """

    name = "entropy"
    version = 4
    columns = ("entropy", "subject_entropy")

    def compute(self, img: WorkImage) -> dict[str, float]:
        return {"entropy": _entropy(img.hist), "subject_entropy": _entropy(img.subject_hist)}


@register
class Chroma(Property):
    """True grayscale test from channel differences, not from the file's PIL mode.

    A grayscale photo saved as RGB (or re-encoded JPEG) has mode RGB, so the mode says nothing.
    `channel_spread` is the 99th percentile over pixels of max(R,G,B) - min(R,G,B): near 0 for
    a grey image (JPEG chroma noise stays within a few levels), tens for any colour photo even
    when most of it is a grey background.
    """

    name = "chroma"
    version = 2
    columns = ("channel_spread",)

    def compute(self, img: WorkImage) -> dict[str, float]:
        r, g, b = cv2.split(img.rgb)
        spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
        counts = np.bincount(spread.ravel(), minlength=256)
        return {"channel_spread": float(np.searchsorted(np.cumsum(counts), 0.99 * spread.size))}


@register
class Colourfulness(Property):
    """Hasler & Süsstrunk colourfulness and mean L*a*b* colour (the image's colour style)."""

    name = "colour"
    version = 2
    columns = ("colourfulness", "mean_l", "mean_a", "mean_b")

    def compute(self, img: WorkImage) -> dict[str, float]:
        r, g, b = (c.astype(np.float32) for c in cv2.split(img.rgb))
        rg_mean, rg_std = cv2.meanStdDev(r - g)
        yb_mean, yb_std = cv2.meanStdDev(0.5 * (r + g) - b)
        value = math.hypot(float(rg_std[0, 0]), float(yb_std[0, 0])) + 0.3 * math.hypot(
            float(rg_mean[0, 0]), float(yb_mean[0, 0]))
        lab = img.lab_mean
        return {"colourfulness": value, "mean_l": float(lab[0]), "mean_a": float(lab[1]),
                "mean_b": float(lab[2])}


@register
class Noise(Property):
    """Noise standard deviation (luma levels) in the flattest parts of the image.

    Immerkaer's 3x3 mask [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels smooth gradients to first
    order and multiplies white noise's std by 6. Its response still contains texture and
    edges, so the std of the response is taken per 8x8 block and the 10th percentile over
    blocks is reported: a clean photo always has some flat area (near 0 there), a noisy one
    has noise everywhere. Measured at working size, the noise that survives downscaling to
    training resolution is what counts.
    """

    name = "noise"
    version = 3
    columns = ("noise",)

    _KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32) / 6.0
    _BLOCK = 8

    def compute(self, img: WorkImage) -> dict[str, float]:
        b = self._BLOCK
        resp = cv2.filter2D(img.gray8, cv2.CV_32F, self._KERNEL)[1:-1, 1:-1]
        if resp.shape[0] < b or resp.shape[1] < b:
            return {"noise": float(resp.std()) if resp.size else 0.0}
        # per-block std from E[x^2] - E[x]^2 (one pass, no temporaries per block)
        s1, s2 = _block_moments(resp, b)
        mean = s1 / (b * b)
        var = np.maximum(s2 / (b * b) - mean * mean, 0.0)
        return {"noise": float(np.sqrt(np.percentile(var, 10)))}


def properties_key() -> dict[str, int]:
    """Name -> version of every registered property: part of the raw cache key."""
    return {name: cls.version for name, cls in sorted(PROPERTIES.items())}


def property_columns() -> list[str]:
    """Every raw column the registered properties produce, in registry order."""
    return [c for cls in PROPERTIES.values() for c in cls.columns]


def measure(img: WorkImage) -> dict[str, float]:
    """All registered properties of one working image."""
    out: dict[str, float] = {}
    for cls in PROPERTIES.values():
        values = cls().compute(img)
        if set(values) != set(cls.columns):
            raise RuntimeError(f"property {cls.name} returned {sorted(values)}, "
                               f"declared {sorted(cls.columns)}")
        out.update(values)
    return out
