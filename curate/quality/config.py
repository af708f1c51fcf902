"""The quality section of params.yaml: one threshold per check, the embedding outlier
score and the report; `Threshold` is also the matte checks' type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.config import ConfigError


@dataclass(frozen=True)
class Threshold:
    """When a quality check flags an image.

    `absolute`: flag values past `value`, in the check's own unit (see the report);
    `percentile`: flag the worst `value` percent of the images judged; `disabled`: never
    flag (the value is still measured and shown).

    `spread` (absolute mode only): also flag values more than `spread` robust standard
    deviations (1.4826 x MAD) past the judged set's median, on the bad side; the cut-off is
    whichever of the two flags more. An absolute value holds for sets as varied as the one it
    was chosen on; a set far more alike (drawings in one style) has outliers well inside it.
    """

    mode: Literal["absolute", "percentile", "disabled"]
    value: float = 0.0
    spread: float | None = None

    def validate(self, key: str) -> None:
        if self.mode == "percentile" and not 0.0 < self.value < 100.0:
            raise ConfigError(f"{key}.value: got {self.value}, a percentile mode needs "
                              "0 < value < 100 (the percent of images to flag)")
        if self.spread is not None and (self.mode != "absolute" or self.spread <= 0):
            raise ConfigError(f"{key}.spread: got {self.spread} with mode {self.mode}; a "
                              "spread is a number > 0 of robust standard deviations, and "
                              "goes with mode: absolute")


def threshold(mode: Literal["absolute", "percentile", "disabled"], value: float = 0.0) -> Any:
    """A dataclass field defaulting to ``Threshold(mode, value)``."""
    return field(default_factory=lambda: Threshold(mode, value))


@dataclass(frozen=True)
class QualityChecks:
    """One threshold per quality check (curate/quality/checks.py documents each value and
    unit); the checks judged from a matte are configured under `matte.checks`."""

    blurry: Threshold = threshold("absolute", 0.1)
    dark: Threshold = threshold("absolute", 0.2)
    overexposed: Threshold = threshold("absolute", 0.5)
    low_contrast: Threshold = threshold("absolute", 0.025)
    low_information: Threshold = threshold("absolute", 2.0)
    grayscale: Threshold = threshold("absolute", 3.0)
    noisy: Threshold = threshold("absolute", 1.5)
    blocky: Threshold = threshold("absolute", 1.0)
    tiny: Threshold = threshold("absolute", 256.0)
    extreme_aspect: Threshold = threshold("absolute", 3.0)
    off_subject: Threshold = threshold("absolute", 0.34)
    colour_style: Threshold = threshold("disabled", 3.0)


@dataclass(frozen=True)
class EmbeddingOutlierConfig:
    """How the off-subject score is computed from MobileNetV2 embeddings."""

    method: Literal["knn", "isolation_forest"] = "knn"
    k: int = 5                     # neighbours averaged by the kNN distance
    per_distribution: bool = True  # kNN against each tagged category, keep the closest
    n_estimators: int = 200        # isolation forest trees
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.k < 1 or self.n_estimators < 1:
            raise ConfigError(f"{key}: k and n_estimators must be >= 1")


@dataclass(frozen=True)
class QualityReportConfig:
    """What reports/outliers.html shows."""

    gallery: int = 60      # images per reason gallery (worst first)
    borderline: int = 8    # images shown on each side of each threshold
    # Link to an image's Label Studio task; {task_id} is replaced. Empty = no link.
    task_url: str = "http://localhost:8080/tasks/{task_id}"

    def validate(self, key: str) -> None:
        if self.gallery < 1 or self.borderline < 0:
            raise ConfigError(f"{key}: gallery must be >= 1 and borderline >= 0")


@dataclass(frozen=True)
class QualityConfig:
    work_side: int = 256           # shorter side of the working image metrics are measured on
    thumb_px: int = 128            # longer side of report thumbnails (cached with the metrics)
    annotator_rejects: bool = True # images rejected in Label Studio are flagged too
    embedding: EmbeddingOutlierConfig = field(default_factory=EmbeddingOutlierConfig)
    checks: QualityChecks = field(default_factory=QualityChecks)
    report: QualityReportConfig = field(default_factory=QualityReportConfig)

    def validate(self, key: str) -> None:
        if not 32 <= self.work_side <= 4096 or not 16 <= self.thumb_px <= 1024:
            raise ConfigError(f"{key}: work_side must be 32..4096 and thumb_px 16..1024")
