"""Issue checks: one small class per kind of issue, registered in a factory.

A check reads one value per image from the measurement frame (a raw property, a metadata
field, an embedding score or a matte statistic), and a `Threshold` from params.yaml turns the
values into flags:

- `absolute`: flag when the value is below (`bad = "low"`) or above (`bad = "high"`) the
  threshold, in the check's own unit (shown in the report next to each histogram);
- `percentile`: flag the worst `value` percent of the images being judged;
- `disabled`: never flag (the value is still recorded and shown).

Each check also gives a severity `score` in 0..1 (1 = worst image of the set on that check),
used to sort the report's galleries. Nothing here touches pixels: re-scoring after a
threshold change costs milliseconds.

Add a check: subclass `Check`, set the class attributes, decorate with `@register`, and add
a `Threshold` field of the same name to `config.QualityChecks` (a test keeps the two in step).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from curate.quality.config import Threshold
from curate.quality.outliers import robust_centre_and_sd
from curate.registry import name_registry

Source = Literal["pixels", "metadata", "embedding", "matte"]


class Check(ABC):
    """One kind of issue: which value it reads, and which side of the threshold is bad."""

    name: ClassVar[str]          # reason code written to manifests, and the params key
    title: ClassVar[str]         # what people read in reports
    description: ClassVar[str]
    metric: ClassVar[str]        # column of the measurement frame
    bad: ClassVar[Literal["low", "high"]]
    unit: ClassVar[str] = ""
    source: ClassVar[Source] = "pixels"
    log_scale: ClassVar[bool] = False  # histogram hint only

    def values(self, frame: pd.DataFrame) -> pd.Series:
        """The value judged for each row (NaN where it could not be measured)."""
        if self.metric not in frame:
            return pd.Series(np.nan, index=frame.index, dtype=float)
        return pd.to_numeric(frame[self.metric], errors="coerce").astype(float)

    def flag_side(self, values: pd.Series, threshold: float) -> pd.Series:
        """True where `values` lie on the bad side of `threshold` (NaN never flags)."""
        return (values < threshold) if self.bad == "low" else (values > threshold)


CHECKS: dict[str, type[Check]] = {}
register = name_registry(CHECKS, "check")  # class decorator: a check under its params key


def make_check(name: str) -> Check:
    """The factory: a check instance by name, with the known names in the error."""
    try:
        return CHECKS[name]()
    except KeyError:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(CHECKS)}") from None


# ----------------------------------------------------------------------- pixel checks


@register
class Blurry(Check):
    name = "blurry"
    title = "Blurry"
    description = ("Even the sharpest parts hold little fine detail: log10 of Laplacian variance "
                   "over luma variance in 32 px tiles at working size, 97th percentile.")
    metric = "sharpness_peak"
    bad = "low"
    unit = "log10"


@register
class Dark(Check):
    name = "dark"
    title = "Dark"
    description = ("Even the brightest 1% of pixels are dark (99th percentile of luma, 0..1); "
                   "unlike a dark-pixel count this spares studio shots on black, down to a "
                   "subject filling 1% of the frame.")
    metric = "luma_p99"
    bad = "low"


@register
class Overexposed(Check):
    name = "overexposed"
    title = "Over-exposed"
    description = ("Fraction of pixels blown out to white (luma >= 250), off a flat backdrop: "
                   "white paper or a sweep that an edge bounds is not over-exposure, white that "
                   "shades off into the scene is.")
    metric = "subject_bright_fraction"
    bad = "high"


@register
class LowContrast(Check):
    name = "low_contrast"
    title = "Low contrast"
    description = "RMS contrast: standard deviation of luma, 0..1."
    metric = "contrast"
    bad = "low"


@register
class LowInformation(Check):
    name = "low_information"
    title = "Low information"
    description = ("Shannon entropy of the luma histogram off a flat backdrop, in bits (0..8); "
                   "a frame that is nearly all backdrop is judged whole.")
    metric = "subject_entropy"
    bad = "low"
    unit = "bits"


@register
class Grayscale(Check):
    name = "grayscale"
    title = "Grayscale"
    description = ("True grayscale: 99th percentile of max(R,G,B) - min(R,G,B), in levels; "
                   "the file's mode is not trusted.")
    metric = "channel_spread"
    bad = "low"
    unit = "levels"


@register
class Noisy(Check):
    name = "noisy"
    title = "Noisy"
    description = ("Noise std (luma levels) in the flattest tenth of the image, by "
                   "Immerkaer's mask at working size.")
    metric = "noise"
    bad = "high"
    unit = "levels"


@register
class Blocky(Check):
    name = "blocky"
    title = "JPEG blocking"
    description = ("How far luma steps across JPEG's 8x8 block edges exceed the steps "
                   "elsewhere, in levels, at half a block's scale (0 for a clean image; "
                   "not measured for JPEGs decoded at an eighth of their size).")
    metric = "blocking"
    bad = "high"
    unit = "levels"


# -------------------------------------------------------------------- metadata checks


@register
class Tiny(Check):
    name = "tiny"
    title = "Too small"
    description = "Shorter side of the image as stored, in pixels."
    metric = "min_side"
    bad = "low"
    unit = "px"
    source = "metadata"
    log_scale = True


@register
class ExtremeAspect(Check):
    name = "extreme_aspect"
    title = "Extreme aspect ratio"
    description = "Longer side over shorter side."
    metric = "aspect"
    bad = "high"
    source = "metadata"


# ----------------------------------------------------------------- set-relative checks


@register
class OffSubject(Check):
    name = "off_subject"
    title = "Off subject"
    description = ("Embedding outlier score: mean cosine distance to the k nearest images "
                   "of the closest distribution in MobileNetV2 space (or the isolation "
                   "forest's anomaly score, per params).")
    metric = "embed_outlier"
    bad = "high"
    source = "embedding"


@register
class ColourStyle(Check):
    name = "colour_style"
    title = "Colour style"
    description = ("How far the image's mean colour (L*a*b*) and colourfulness are from its "
                   "distribution's median, in robust standard deviations.")
    metric = "colour_distance"
    bad = "high"
    unit = "MAD"


# ------------------------------------------------------------------ matte-fed checks


@register
class PoorSeparation(Check):
    name = "poor_separation"
    title = "Poor fg/bg separation"
    description = ("Colour separation of foreground and background under the matte: 1 - "
                   "Bhattacharyya overlap of their colour histograms (0 = same colours).")
    metric = "separation"
    bad = "low"
    source = "matte"


@register
class SmallForeground(Check):
    name = "small_foreground"
    title = "Little or no foreground"
    description = "Fraction of the image the matte keeps as foreground."
    metric = "fg_fraction"
    bad = "low"
    source = "matte"


@register
class SoftMatte(Check):
    name = "soft_matte"
    title = "Uncertain matte"
    description = ("Boundary sharpness of the matte: share of confident (alpha < 0.1 or "
                   "> 0.9) pixels in a band around the foreground's edge.")
    metric = "boundary_sharpness"
    bad = "low"
    source = "matte"


@register
class MatteOffSubject(Check):
    name = "matte_off_subject"
    title = "Matte lost the subject"
    description = ("How far the composite (the matte on the background) lies from its k "
                   "nearest composites in MobileNetV2 space, as a multiple of the median "
                   "composite's distance. High when the matte kept another object (a rug, a "
                   "box) instead of the subject, or cut the subject apart.")
    metric = "matte_outlier"
    bad = "high"
    unit = "x median"
    source = "matte"


# ------------------------------------------------------------------------- evaluation


@dataclass
class CheckResult:
    """A check applied to a set: values, severity scores, flags and the threshold used."""

    check: Check
    threshold: Threshold
    cutoff: float | None  # the absolute cut-off in the check's unit (None when off/empty)
    values: pd.Series
    scores: pd.Series
    flags: pd.Series


def severity(values: pd.Series, bad: Literal["low", "high"]) -> pd.Series:
    """Rank of each value among the finite ones, 0..1, 1 = worst; NaN stays NaN."""
    ranks = values.rank(method="average", ascending=(bad == "high"), na_option="keep")
    n = int(values.notna().sum())
    if n <= 1:
        return ranks.where(ranks.isna(), 1.0)
    return (ranks - 1) / (n - 1)


#: Fewest measured values a `spread` cut-off is drawn from: the MAD of a handful of values
#: is too unsure to put a cut-off three of them out.
MIN_SPREAD_SAMPLE = 20


def spread_cutoff(check: Check, finite: np.ndarray, spread: float) -> float | None:
    """The value `spread` robust standard deviations past the median on the bad side, or
    None when the set is too small or has no spread (over half its values equal)."""
    if finite.size < MIN_SPREAD_SAMPLE:
        return None
    centre, sd = robust_centre_and_sd(finite)
    median, sigma = float(centre), float(sd)
    if sigma <= 0:
        return None
    return median - spread * sigma if check.bad == "low" else median + spread * sigma


def resolve_cutoff(check: Check, values: pd.Series, threshold: Threshold) -> float | None:
    """The absolute cut-off a threshold stands for on this set of values."""
    if threshold.mode == "disabled":
        return None
    finite = values.dropna().to_numpy(dtype=float)
    if threshold.mode == "absolute":
        relative = (None if threshold.spread is None
                    else spread_cutoff(check, finite, threshold.spread))
        if relative is None:
            return threshold.value
        return max(threshold.value, relative) if check.bad == "low" else min(
            threshold.value, relative)
    if finite.size == 0:
        return None
    q = threshold.value if check.bad == "low" else 100.0 - threshold.value
    return float(np.percentile(finite, q))


def evaluate(check: Check, frame: pd.DataFrame, threshold: Threshold,
             judged: pd.Series | None = None) -> CheckResult:
    """Apply one check to `frame`; only rows where `judged` is True can be flagged.

    Percentile cut-offs and severity ranks are computed over the judged rows only, so images
    already removed upstream (duplicates) do not shift them.
    """
    values = check.values(frame)
    if judged is None:
        judged = pd.Series(True, index=frame.index)
    in_set = values.where(judged)
    cutoff = resolve_cutoff(check, in_set, threshold)
    scores = severity(in_set, check.bad)
    if cutoff is None:
        flags = pd.Series(False, index=frame.index)
    else:
        flags = check.flag_side(in_set, cutoff).fillna(False).astype(bool) & judged
    return CheckResult(check, threshold, cutoff, values, scores, flags)


def evaluate_all(frame: pd.DataFrame, thresholds: object, judged: pd.Series | None = None,
                 sources: Iterable[Source] | None = None) -> dict[str, CheckResult]:
    """Every registered check (optionally only those of `sources`) with its params threshold.

    `thresholds` is a `config.QualityChecks`: one `Threshold` attribute per check name.
    """
    wanted = set(sources) if sources is not None else None
    results: dict[str, CheckResult] = {}
    for name, cls in CHECKS.items():
        if wanted is not None and cls.source not in wanted:
            continue
        results[name] = evaluate(cls(), frame, getattr(thresholds, name), judged)
    return results


def reasons_per_row(results: dict[str, CheckResult], index: pd.Index) -> pd.Series:
    """The list of flagged check names for each row, in registry order."""
    lists: list[list[str]] = [[] for _ in range(len(index))]
    for name, result in results.items():
        for pos in np.flatnonzero(result.flags.reindex(index, fill_value=False).to_numpy()):
            lists[pos].append(name)
    return pd.Series(lists, index=index, dtype=object)
