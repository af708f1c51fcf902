"""Quality stage: measure every live image, judge it with the checks, report the outliers.

Reads the dedup manifest (and the tags stage's merged view when present), writes
data/quality/manifest.parquet (every input row and column, plus `q_*` measurements,
`q_score_*` severities, `quality_reasons`, and status `outlier` with the reasons for flagged
images), data/quality/summary.json and reports/outliers.html.

Three steps, each cheap to redo:

1. measure: raw properties and a report thumbnail per image, from one reduced-scale decode,
   cached by (image id, metric versions, working and thumbnail sizes); a rerun decodes only
   new images;
2. score: set-relative values (embedding kNN distance, colour-style distance) from cached
   embeddings and raw properties;
3. judge: thresholds from params.yaml turn values into flags. Changing a threshold reruns
   steps 2-3 only: no image is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import atomic
from core.cache import ResultCache, op_key
from core.console import StageSummary, console
from core.imagemap import cached_map
from core.manifest import read_table, write_table
from core.stage import StageResult, Status
from curate.config import Params
from curate.quality import outliers
from curate.quality.checks import CheckResult, evaluate_all, reasons_per_row
from curate.quality.config import QualityConfig
from curate.quality.properties import properties_key, property_columns
from curate.quality.report import ExtraReason, ReportInput, write_report
from curate.quality.tags import load_tags
from curate.quality.worker import MeasureTask, measure_image

#: Bump when the cached record of one image changes shape.
MEASURE_VERSION = 2
ANNOTATOR_REJECT = "annotator_reject"
UNREADABLE = "unreadable"
#: Sources of checks the quality stage applies (matte-fed checks run in the matte stage).
QUALITY_SOURCES = ("pixels", "metadata", "embedding")


@dataclass(frozen=True)
class QualityOptions:
    """Run-time inputs and outputs (paths), not part of params.yaml."""

    manifest: Path = Path("data/dedup/manifest.parquet")
    tags: Path | None = Path("data/tags/merged.parquet")
    out_dir: Path = Path("data/quality")
    report: Path | None = None  # default: <paths.reports>/outliers.html
    workers: int | None = None


@dataclass
class Measurements:
    """Raw properties of the judged images, and how they were obtained. Thumbnails stay in
    the cache (`op`) until the report reads the few it shows: at 100k images they would
    hold hundreds of megabytes."""

    raw: pd.DataFrame                     # index image_id, property columns
    op: str
    errors: dict[str, str] = field(default_factory=dict)  # image id -> message
    decoded: int = 0
    cached: int = 0


def measure_op(cfg: QualityConfig) -> str:
    """Cache key of one image's raw properties and thumbnail: every property version, the
    working size and the thumbnail size."""
    return op_key("quality.measure", MEASURE_VERSION, {
        "work_side": cfg.work_side, "properties": properties_key(), "thumb_px": cfg.thumb_px})


def measure_images(params: Params, rows: pd.DataFrame, cache: ResultCache,
                   workers: int) -> Measurements:
    """Raw properties for `rows` (image_id, store_path, width, height), from cache or decode."""
    cfg = params.quality
    bg = params.background
    tasks = [MeasureTask(image_id=i, path=params.paths.store / p, long_side=max(int(w), int(h)),
                         work_side=cfg.work_side, thumb_px=cfg.thumb_px,
                         max_pixels=params.ingest.max_pixels, background=(bg[0], bg[1], bg[2]))
             for i, p, w, h in zip(rows["image_id"], rows["store_path"], rows["width"],
                                   rows["height"], strict=True)]
    result = Measurements(pd.DataFrame(), measure_op(cfg))
    raw: dict[str, dict[str, Any]] = {}
    for outcome in cached_map(result.op, tasks, measure_image, cache,
                              key=attrgetter("image_id"), workers=workers, batch=8,
                              description="quality: measure"):
        image_id = outcome.item.image_id
        if outcome.cached:
            result.cached += 1
        else:
            result.decoded += 1
        if outcome.ok:
            raw[image_id] = outcome.value["raw"]
        else:
            result.errors[image_id] = outcome.failure.describe()
    columns = property_columns()
    result.raw = pd.DataFrame.from_dict(raw, orient="index").reindex(columns=columns)
    return result


class _CachedThumbs(Mapping[str, str]):
    """The report's thumbnails, read from the measure cache as the report asks for them."""

    def __init__(self, cache: ResultCache, op: str) -> None:
        self.cache, self.op = cache, op

    def __getitem__(self, image_id: str) -> str:
        value = self.cache.get(self.op, image_id)
        if value is None:
            raise KeyError(image_id)
        return value["thumb"]

    def __iter__(self) -> Iterator[str]:
        return (image_id for image_id, _ in self.cache.items(self.op))

    def __len__(self) -> int:
        return self.cache.count(self.op)


def embedding_outlier_scores(params: Params, frame: pd.DataFrame, judged: pd.Series,
                             groups: list[object] | None, workers: int) -> np.ndarray:
    """The off-subject score per row of `frame` (NaN where not judged or not embeddable).

    Embeddings come from `curate.embeddings` (computed once per image and cached, shared with
    dedup and split), so this costs a cache read after the first run.
    """
    from curate import embeddings

    cfg = params.quality.embedding
    vectors = embeddings.embed_images(params, frame.index.tolist(), frame["store_path"].tolist(),
                                      judged.to_numpy(), workers=workers)
    usable = judged.to_numpy() & np.isfinite(vectors).all(axis=1)
    vectors = np.nan_to_num(vectors)
    if cfg.method == "isolation_forest":
        return outliers.isolation_forest_scores(vectors, usable, cfg.n_estimators, cfg.seed)
    return outliers.knn_scores(vectors, usable, cfg.k, groups if cfg.per_distribution else None)


def build_frame(manifest: pd.DataFrame, meas: Measurements, tags: pd.DataFrame | None
                ) -> pd.DataFrame:
    """One row per image id: manifest columns, raw properties, metadata values and tags."""
    frame = manifest.set_index("image_id", drop=False)
    frame.index.name = None
    frame = frame.join(meas.raw, how="left")
    width = pd.to_numeric(frame["width"], errors="coerce")
    height = pd.to_numeric(frame["height"], errors="coerce")
    frame["min_side"] = np.minimum(width, height)
    frame["aspect"] = np.maximum(width, height) / np.minimum(width, height)
    tag_columns = ["category", "reject", "task_id"]
    frame = frame.drop(columns=[c for c in tag_columns if c in frame])
    if tags is not None:
        frame = frame.join(tags.set_index("image_id")[tag_columns], how="left")
    else:
        frame["category"] = None
        frame["reject"] = False
        frame["task_id"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["reject"] = frame["reject"].astype("boolean").fillna(False).astype(bool)
    return frame


@dataclass
class Judgement:
    """The outcome of scoring and judging (everything the outputs are written from)."""

    frame: pd.DataFrame
    results: dict[str, CheckResult]
    reasons: pd.Series
    judged: pd.Series
    extra: list[ExtraReason]
    notes: list[str]


def judge(params: Params, frame: pd.DataFrame, meas: Measurements, use_tags: bool,
          workers: int) -> Judgement:
    """Set-relative scores, then thresholds: flags and reasons per image (no decoding)."""
    cfg = params.quality
    live = (frame["status"].eq(Status.OK) if "status" in frame
            else pd.Series(True, index=frame.index))
    unreadable = frame.index.isin(list(meas.errors))
    judged = live & ~unreadable
    groups = frame["category"].tolist() if use_tags else None
    notes: list[str] = []
    style = frame.reindex(columns=list(outliers.STYLE_COLUMNS)).to_numpy(dtype=float)
    frame["colour_distance"] = outliers.colour_style_distance(style, judged.to_numpy(), groups)
    frame["embed_outlier"] = embedding_outlier_scores(params, frame, judged, groups, workers)
    results = evaluate_all(frame, cfg.checks, judged, sources=QUALITY_SOURCES)
    reasons = reasons_per_row(results, frame.index)
    extra = [ExtraReason(UNREADABLE, "Unreadable", "The stored file could not be decoded.",
                         sorted(frame.index[live & unreadable]))]
    for image_id in extra[0].ids:
        reasons[image_id] = [*reasons[image_id], UNREADABLE]
    if cfg.annotator_rejects and use_tags:
        rejected = frame.index[judged & frame["reject"]]
        extra.append(ExtraReason(ANNOTATOR_REJECT, "Rejected by an annotator",
                                 "Label Studio verdict: reject (tags stage, merged view).",
                                 sorted(rejected)))
        for image_id in rejected:
            reasons[image_id] = [*reasons[image_id], ANNOTATOR_REJECT]
    if use_tags:
        tagged = int(frame["category"].notna().sum())
        notes.append(f"Distributions for the embedding and colour-style scores: {tagged} "
                     "images with a tagged category.")
    else:
        notes.append("No tags found: embedding and colour-style scores use the whole set as "
                     "one distribution, and annotator rejects are not applied.")
    return Judgement(frame, results, reasons, judged, extra, notes)


def output_manifest(manifest: pd.DataFrame, j: Judgement, meas: Measurements) -> pd.DataFrame:
    """Every input row and column, plus measurements, severities, reasons and status."""
    out = manifest.copy()
    ids = out["image_id"]
    metric_cols = [*property_columns(), "min_side", "aspect", "embed_outlier", "colour_distance"]
    for col in metric_cols:
        out[f"q_{col}"] = ids.map(j.frame[col]).astype("float64").to_numpy()
    for name, result in j.results.items():
        out[f"q_score_{name}"] = ids.map(result.scores).astype("float64").to_numpy()
    reasons = ids.map(j.reasons)
    out["quality_reasons"] = [list(r) if isinstance(r, list) else [] for r in reasons]
    out["quality_error"] = ids.map(meas.errors).astype("string")
    flagged = out["quality_reasons"].map(len).gt(0) & out["status"].eq(Status.OK)
    out.loc[flagged, "status"] = Status.OUTLIER.value
    out.loc[flagged, "reason"] = out.loc[flagged, "quality_reasons"].map(",".join)
    return out


def _summarise(summary: StageSummary, manifest: pd.DataFrame, out: pd.DataFrame,
               meas: Measurements) -> StageSummary:
    """Counts in/out per outcome and per reason (an image counts once per reason)."""
    summary.cached = meas.cached
    before = manifest["status"].value_counts()
    for status, n in before.items():
        if status != Status.OK:
            summary.count(f"passed through ({status})", n=int(n))
    flagged = out["status"].eq(Status.OUTLIER) & manifest["status"].eq(Status.OK)
    summary.count("kept", n=int((out["status"] == Status.OK).sum()))
    summary.count("outlier", n=int(flagged.sum()))
    for reasons in out.loc[flagged, "quality_reasons"]:
        for r in reasons:
            summary.reasons[r] += 1
    return summary


def _report(params: Params, j: Judgement, thumbs: Mapping[str, str], manifest: pd.DataFrame,
            path: Path) -> Path:
    cfg = params.quality.report
    task_ids = {i: int(t) for i, t in j.frame["task_id"].dropna().items()}
    n_live = int(manifest["status"].eq(Status.OK).sum())
    inp = ReportInput(
        title="Quality outliers", frame=j.frame, results=j.results, reasons=j.reasons,
        thumbs=thumbs, judged=j.judged, extra_reasons=j.extra,
        metric_columns=[*property_columns(), "min_side", "aspect", "embed_outlier",
                        "colour_distance", "category"],
        totals=[("images in the manifest", len(manifest)),
                ("judged (live after dedup)", n_live),
                ("passed through untouched", len(manifest) - n_live)],
        task_ids=task_ids, task_url=cfg.task_url, gallery=cfg.gallery,
        borderline=cfg.borderline, notes=j.notes)
    return write_report(inp, path)


def _metrics(summary: StageSummary, j: Judgement) -> dict[str, Any]:
    metrics = summary.metrics()
    metrics["cutoffs"] = {name: r.cutoff for name, r in j.results.items()}
    return metrics


def run_quality(params: Params, options: QualityOptions = QualityOptions()) -> StageResult:
    """Measure, score and judge every live image of the input manifest; write all outputs.

    ``computed``: images decoded and measured now (the rest came from the cache).
    """
    summary = StageSummary("quality")
    manifest = read_table(options.manifest)
    if "status" not in manifest:
        manifest["status"] = Status.OK.value
    if "reason" not in manifest:
        manifest["reason"] = None
    tags = load_tags(options.tags, params.tags.categories)
    workers = options.workers or params.n_workers
    live = manifest[manifest["status"].eq(Status.OK)]
    with ResultCache(params.paths.cache / "cache.sqlite") as cache:
        with summary.phase("measure"):
            meas = measure_images(params, live[["image_id", "store_path", "width", "height"]],
                                  cache, workers)
        frame = build_frame(manifest, meas, tags)
        with summary.phase("scores and checks"):
            j = judge(params, frame, meas, use_tags=tags is not None, workers=workers)
        out = output_manifest(manifest, j, meas)
        write_table(out, options.out_dir / "manifest.parquet", sort_by=["image_id"])
        _summarise(summary, manifest, out, meas)
        atomic.write_text(options.out_dir / "summary.json",
                          json.dumps(_metrics(summary, j), indent=2, sort_keys=True) + "\n")
        with summary.phase("report"):
            report = _report(params, j, _CachedThumbs(cache, meas.op), manifest,
                             options.report or params.paths.reports / "outliers.html")
    summary.print()
    console.print(f"quality: decoded {meas.decoded:,} images, {meas.cached:,} from cache; "
                  f"report: {report}")
    return StageResult(summary, {"manifest": options.out_dir / "manifest.parquet",
                                 "summary": options.out_dir / "summary.json", "report": report},
                       computed=meas.decoded)
