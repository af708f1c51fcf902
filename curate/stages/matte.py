"""Matte stage: remove backgrounds of the images quality kept, and judge the mattes.

Reads data/quality/manifest.parquet; for every live image (status ok) writes the image
composited on params `background` and its mask as PNGs under
data/matte/out/<variant>/{images,masks}/ab/cd/<id>.png, where <variant> names the method and
hashes every setting that changes the pixels, so switching settings and back never serves a
stale file. Results are cached per (image id, variant): a rerun mattes only new images.

The mask statistics (foreground fraction, boundary sharpness, colour separation) are quality
signals that only exist once a matte does. Rather than loop back into the quality stage (a
cycle DVC cannot express), this stage applies the matte-fed quality checks itself, with their
thresholds from `matte.checks` in params.yaml: an image whose matte fails them gets status
`outlier` with the reason (`poor_separation`, `small_foreground`, `soft_matte`,
`matte_off_subject`), exactly as a quality flag would, and reports/mattes.html shows them
with the same report layout as reports/outliers.html.

Outputs: data/matte/manifest.parquet (every input row and column, plus `matte_path`,
`mask_path` relative to the manifest's folder, `m_*` statistics (`m_matte_outlier` among
them), `m_score_*` severities, `matte_reasons`, `matte_error`), data/matte/summary.json,
reports/mattes.html.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import Executor
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import atomic, models
from core.cache import ResultCache, op_key
from core.console import StageSummary, console
from core.device import check
from core.imagemap import cached_map, map_items
from core.manifest import read_table, write_table
from core.parallel import engine_is_local, make_executor
from core.stage import StageResult, Status
from core.store import Store
from curate.config import Params
from curate.matte import subject
from curate.matte.backends import backend_class
from curate.matte.stats import STAT_COLUMNS, STATS_VERSION
from curate.matte.worker import MatteTask, matte_image, training_image
from curate.quality.checks import evaluate_all, reasons_per_row
from curate.quality.report import ExtraReason, ReportInput, write_report

#: 2: subject selection on the backend's mask; 3: its cut spares the subject's edge.
MATTE_VERSION = 3
#: Bump when the subject model's learning changes.
SUBJECT_MODEL_VERSION = 2  # 2: learned with the cut that spares the subject's edge
OUT_SUBDIR = "out"
COMPOSITE_OUTLIER = "matte_outlier"  # column of the composite's embedding outlier score
#: Manifest columns (m_<name>) of what subject selection changed.
SUBJECT_COLUMNS = ("parts_dropped", "subject_removed", "subject_added")
#: Fewer composites than this are not scored: "unlike the rest" means nothing in a handful.
MIN_COMPOSITES = 20
NO_HINTS = subject.Hints()


@dataclass(frozen=True)
class MatteOptions:
    """Run-time inputs and outputs (paths), not part of params.yaml."""

    manifest: Path = Path("data/quality/manifest.parquet")
    out_dir: Path = Path("data/matte")
    report: Path | None = None  # default: <paths.reports>/mattes.html
    tags: Path | None = Path("data/tags/merged.parquet")  # annotator boxes and keypoints
    workers: int | None = None


def variant_key(params: Params, backend_params: dict[str, Any]) -> tuple[str, str, str]:
    """(cache op, folder name, raw-mask folder name) for the current settings.

    The raw folder holds the backend's own masks and depends only on the backend's settings,
    so changing the subject selection (or relearning its model) never runs the backend again.
    """
    cfg = params.matte
    raw = {"method": cfg.method, **backend_params, "background": list(params.background),
           "max_side": cfg.max_side}
    subject_settings = dataclasses.asdict(cfg.subject) if cfg.subject.enabled else None
    op = op_key("matte", MATTE_VERSION, {**raw, "subject": subject_settings})
    label = cfg.model if cfg.method == "rembg" else cfg.method
    raw_name = f"raw-{label}-{op_key('raw', MATTE_VERSION, raw).rsplit(':', 1)[-1][:10]}"
    return op, f"{label}-{op.rsplit(':', 1)[-1][:10]}", raw_name


def current_variant(params: Params) -> tuple[str, str | None]:
    """(folder of the composites and masks, folder of the backend's raw masks or None when
    subject selection is off) that these params write under data/matte/out/."""
    _, variant, raw_name = variant_key(params, backend_class(params.matte).settings(params.matte))
    return variant, raw_name if params.matte.subject.enabled else None


@dataclass
class _Work:
    """Mattes of the live images: cached or just made, failures, and what it cost."""

    known: dict[str, Any]
    errors: dict[str, str]
    made: int = 0
    remeasured: int = 0
    cached: int = 0
    model_note: str = ""


@dataclass(frozen=True)
class _Layout:
    """Where one settings variant's files go, and what every task shares."""

    root: Path  # composites and cleaned masks
    raw: Path | None  # the backend's own masks (None: subject selection off)
    models_dir: Path
    workers: int


def _task(params: Params, layout: _Layout, image_id: str, store_path: str, *,
          model: dict[str, Any] | None = None,
          hints: subject.Hints = NO_HINTS, width: int = 0,
          feats: np.ndarray | None = None) -> MatteTask:
    images, masks = Store(layout.root / "images"), Store(layout.root / "masks")
    bg = (params.background[0], params.background[1], params.background[2])
    raw = None if layout.raw is None else Store(layout.raw).path(image_id, "png")
    return MatteTask(image_id, params.paths.store / store_path, images.path(image_id, "png"),
                     masks.path(image_id, "png"), params.matte, layout.models_dir, bg,
                     params.ingest.max_pixels, params.quality.thumb_px,
                     raw_out=raw, model=model, hints=hints, source_width=width, feats=feats)


def _matte_images(params: Params, live: pd.DataFrame, op: str, layout: _Layout,
                  hints: dict[str, subject.Hints]) -> _Work:
    """Matte what the cache lacks (or re-measure stale statistics), committing in batches."""
    for folder in (layout.root / "images", layout.root / "masks", layout.raw):
        if folder is not None:
            Store(folder).sweep()  # PNGs a killed run's workers left staged (this run holds
            # the lock on the matte outputs, so no other run is writing there)
    with ResultCache(params.paths.cache / "cache.sqlite") as cache:
        # One pool for learning and matting: each worker loads its networks once.
        executor = make_executor(layout.workers, gpu=params.matte.device == "cuda")
        try:
            return _matte_with(params, live, op, layout, hints, cache, executor)
        finally:
            executor.shutdown(cancel_futures=True)


def _matte_with(params: Params, live: pd.DataFrame, op: str, layout: _Layout,
                hints: dict[str, subject.Hints], cache: ResultCache, executor: Executor
                ) -> _Work:
    """`_matte_images` with its cache and worker pool open."""
    images, masks = Store(layout.root / "images"), Store(layout.root / "masks")
    thumb_px = params.quality.thumb_px
    learned: dict[str, np.ndarray] = {}  # features the learning computed, reused to clean
    model, model_note = (_subject_model(params, live, layout, cache, executor, learned)
                         if layout.raw is not None else (None, ""))
    digest = None if model is None else model.digest()

    def revisit(task: MatteTask, kept: dict[str, Any]) -> MatteTask | None:
        """A cached matte holds while its files have the sizes recorded when they were
        written and its mask comes from the current subject model; outdated statistics are
        only measured again."""
        if not (images.has(task.image_id, "png", kept.get("image_bytes"))
                and masks.has(task.image_id, "png", kept.get("mask_bytes"))
                and kept.get("model") == digest):
            return task
        if (kept.get("stats_version") != STATS_VERSION or kept.get("thumb_px") != thumb_px
                or "image_bytes" not in kept):
            return dataclasses.replace(task, restat_only=True,
                                       subject_record=kept.get("subject"))
        return None

    model_json = None if model is None else model.to_json()
    tasks = [_task(params, layout, i, p, model=model_json, hints=hints.get(i, NO_HINTS),
                   width=int(w), feats=learned.pop(i, None))
             for i, p, w in zip(live["image_id"], live["store_path"], live["width"],
                                strict=True)]
    work = _Work({}, {}, model_note=model_note)
    for outcome in cached_map(op, tasks, matte_image, cache, key=attrgetter("image_id"),
                              workers=layout.workers, revisit=revisit,
                              record=lambda _, out: {**out, "model": digest},
                              executor=executor, description=f"matte ({layout.root.name})"):
        task = outcome.item
        if outcome.cached:
            work.cached += 1
        elif task.restat_only:
            work.remeasured += 1
        else:
            work.made += 1
        if outcome.ok:
            work.known[task.image_id] = outcome.value
        else:
            work.errors[task.image_id] = outcome.failure.describe()
    return work


def _subject_model(params: Params, live: pd.DataFrame, layout: _Layout, cache: ResultCache,
                   executor: Executor, features: dict[str, np.ndarray]
                   ) -> tuple[subject.SubjectModel | None, str]:
    """The subject model for this collection and the report's line describing it.

    Learned from a sample: the `sample` lowest image ids (ids are content hashes, so this is
    a fixed pseudo-random sample that new images join only rarely). The model is kept in the
    cache with the ids it was learned from and reused while at least `refit_below` of the
    current sample is among them: adding 1% more images then re-cleans only those images,
    instead of every matte for a slightly different model.
    """
    cfg = params.matte.subject
    if len(live) < cfg.min_images:
        return None, (f"subject model: not learned ({len(live)} images < "
                      f"matte.subject.min_images {cfg.min_images}); parts chosen by tags or "
                      "position")
    key = op_key("matte.subject_model", SUBJECT_MODEL_VERSION,
                 {"raw": layout.raw.name if layout.raw else None,
                  **dataclasses.asdict(cfg)})
    sample = live.sort_values("image_id").head(cfg.sample)
    kept = cache.get(key, "model")
    if kept is not None:
        overlap = len(set(kept["ids"]) & set(sample["image_id"])) / max(1, len(sample))
        if overlap >= cfg.refit_below:
            console.print(f"matte: subject model reused from the cache ({overlap:.0%} of "
                          "today's sample is among the images it was learned on)")
            return (subject.SubjectModel.from_json(kept["model"]),
                    _learned_note(len(kept["ids"]), cfg.rounds))
    tasks = [_task(params, layout, i, p) for i, p in zip(sample["image_id"],
                                                         sample["store_path"], strict=True)]
    learned = {o.item.image_id: o.value
               for o in map_items(training_image, tasks, workers=layout.workers,
                                  executor=executor, description="matte: learn the subject")
               if o.ok}
    features.update((i, t.feats) for i, t in learned.items())
    ids = sorted(learned)
    model = subject.self_train([learned[i] for i in ids], cfg.rounds) if ids else None
    if model is None:
        return None, "subject model: nothing to learn from (no usable sample matte)"
    cache.put(key, "model", {"ids": ids, "model": model.to_json()})
    return model, _learned_note(len(ids), cfg.rounds)


def _learned_note(images: int, rounds: int) -> str:
    """The report's line on the model: the same whether it was learned now or reused, so a
    rerun (after a kill, or with 1% more images) writes the same report."""
    return f"subject model: learned on {images} images, {rounds} rounds"


def run_matte(params: Params, options: MatteOptions = MatteOptions()) -> StageResult:
    """Matte every live image, judge the mattes, write manifest, summary and report.

    ``computed``: images matted now. ``details``: ``remeasured`` (matted before, statistics
    measured again) and ``variant`` (the folder of this settings' mattes under ``out_dir``).
    """
    summary = StageSummary("matte")
    manifest = read_table(options.manifest)
    mdir = models.models_dir(params.paths.models)
    if params.matte.method == "rembg":
        models.require(params.matte.model, mdir)  # fail now, naming the provisioning command
    if engine_is_local():
        if params.matte.method == "rembg":
            check(params.matte.device, "matte (U^2-Net)", onnx=True)
        if params.matte.subject.enabled:
            check(params.matte.device, "matte (subject features)")
    op, variant, raw_name = variant_key(params,
                                        backend_class(params.matte).settings(params.matte))
    root = options.out_dir / OUT_SUBDIR / variant
    live = manifest[manifest["status"].eq(Status.OK)]
    workers = options.workers or params.n_workers
    enabled = params.matte.subject.enabled
    layout = _Layout(root, options.out_dir / OUT_SUBDIR / raw_name if enabled else None, mdir,
                     workers)
    work = _matte_images(params, live, op, layout, load_hints(options.tags) if enabled else {})
    if work.model_note:
        console.print(f"matte: {work.model_note}")
    summary.cached = work.cached
    composite_scores = _composite_outliers(params, work.known, root, workers)
    out, results, reasons, frame, judged = _judge(params, manifest, work.known, work.errors,
                                                  composite_scores, root, options.out_dir)
    write_table(out, options.out_dir / "manifest.parquet", sort_by=["image_id"])
    _count(summary, manifest, out)
    metrics = summary.metrics()
    metrics["variant"] = variant
    metrics["raw_variant"] = layout.raw.name if layout.raw is not None else None  # for `curate gc`
    metrics["cutoffs"] = {n: r.cutoff for n, r in results.items()}
    atomic.write_text(options.out_dir / "summary.json",
                      json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    report = options.report or params.paths.reports / "mattes.html"
    write_report(ReportInput(
        title=f"Mattes ({variant})", frame=frame, results=results, reasons=reasons,
        thumbs={i: v["thumb"] for i, v in work.known.items() if "thumb" in v}, judged=judged,
        extra_reasons=[ExtraReason("matte_failed", "Matte failed",
                                   "The image could not be matted (see matte_error).",
                                   sorted(work.errors)),
                       ExtraReason("subject_cleaned", "Clutter removed from the matte",
                                   "Subject selection dropped parts of the backend's matte "
                                   "(parts_dropped) or cut attached clutter away "
                                   f"(subject_removed >= {subject.CLEANED_SHARE:.0%} of its "
                                   "foreground); "
                                   "subject_added is subject the backend had missed. The "
                                   "thumbnails show the cleaned composites.",
                                   _cleaned(work.known))],
        metric_columns=[*STAT_COLUMNS, COMPOSITE_OUTLIER, *SUBJECT_COLUMNS],
        totals=[("images in the manifest", len(manifest)), ("matted", int(judged.sum()))],
        gallery=params.quality.report.gallery, borderline=params.quality.report.borderline,
        notes=[f"Composites on background {list(params.background)}; files under {root}.",
               *([work.model_note] if work.model_note else [])]),
        report)
    summary.print()
    console.print(f"matte: {work.made:,} matted, {work.remeasured:,} re-measured, "
                  f"{work.cached:,} from cache -> {root}; report: {report}")
    return StageResult(summary, {"manifest": options.out_dir / "manifest.parquet",
                                 "summary": options.out_dir / "summary.json", "report": report,
                                 "mattes": root},
                       computed=work.made,
                       details={"remeasured": work.remeasured, "variant": variant})


def load_hints(path: Path | None) -> dict[str, subject.Hints]:
    """Per tagged image: its keypoints and box (stored image pixels) from the tags stage's
    merged view; nothing when there is no such file."""
    if path is None or not Path(path).exists():
        return {}
    tags = pd.read_parquet(path)
    kp_x = sorted(c for c in tags.columns if c.startswith("kp_") and c.endswith("_x"))
    box = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    has_box = all(c in tags for c in box)
    hints = {}
    for row in tags.itertuples(index=False):
        values = row._asdict()
        points = tuple((float(values[c]), float(values[c[:-2] + "_y"])) for c in kp_x
                       if c[:-2] + "_y" in values and _finite(values[c])
                       and _finite(values[c[:-2] + "_y"]))
        b = tuple(float(values[c]) for c in box) if has_box else None
        found = subject.Hints(points, b if b is not None and all(map(_finite, b)) else None)
        if found:
            hints[str(values["image_id"])] = found
    return hints


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and bool(np.isfinite(value))


def _cleaned(known: dict[str, Any]) -> list[str]:
    """Images whose matte lost parts or a share of clutter to subject selection."""
    return sorted(i for i, v in known.items()
                  if (rec := v.get("subject"))
                  and subject.was_cleaned(rec["parts_dropped"], rec["removed"]))


def _composite_outliers(params: Params, known: dict[str, Any], root: Path,
                        workers: int) -> pd.Series:
    """Per matted image: how much farther its composite lies from its k nearest composites
    than the median composite does (mean cosine distance / the set's median of it).

    The signal of `matte_off_subject`: a matte that kept a salient rug or box instead of the
    subject leaves a composite unlike every other one, though its mask is crisp and well
    separated (on the demo the distance ranks mattes with IoU < 0.3 against the true mask above
    the rest with ROC AUC 0.99, and 1.0 on the e2e test's 38 images). The ratio, not the
    distance, is thresholded: distances grow as a set gets smaller and sparser (the median was
    0.08 over the demo's 424 composites, 0.10 over 38), and a fixed distance that suits one set
    flags a whole minority sub-distribution of the other. One reference set for all images, not
    one per distribution: composites on a plain background differ far less between
    distributions than photos do, fewer references make sparser sets, and the split comes later.
    Embeddings are computed once per composite and cached (keyed by the matte variant) in the
    embedding cache the other stages share. Below MIN_COMPOSITES images, or with the check
    disabled (no MobileNetV2 needed then), scores are NaN.
    """
    from curate import embeddings
    from curate.quality.outliers import knn_scores

    ids = sorted(known)
    if len(ids) < MIN_COMPOSITES or params.matte.checks.matte_off_subject.mode == "disabled":
        return pd.Series(np.nan, index=ids, dtype=float)
    images = Store(root / "images")
    vectors = embeddings.embed_detailed(
        params, [(f"{root.name}/{i}", images.path(i, "png")) for i in ids], workers=workers,
        description="embed composites").vectors
    usable = np.isfinite(vectors).all(axis=1)
    distances = knn_scores(np.nan_to_num(vectors), usable, params.quality.embedding.k)
    typical = np.nanmedian(distances) if usable.any() else np.nan
    if not typical > 0:  # nothing embeddable, or every composite identical: nothing stands out
        return pd.Series(np.nan, index=ids, dtype=float)
    return pd.Series(distances / typical, index=ids, dtype=float)


def _judge(params: Params, manifest: pd.DataFrame, known: dict[str, Any],
           errors: dict[str, str], composite_scores: pd.Series, root: Path, out_dir: Path
           ) -> tuple[pd.DataFrame, dict, pd.Series, pd.DataFrame, pd.Series]:
    """Apply the matte-fed quality checks; build the output manifest."""
    stats = pd.DataFrame.from_dict({i: v["stats"] for i, v in known.items()}, orient="index")
    stats = stats.reindex(columns=list(STAT_COLUMNS))
    stats[COMPOSITE_OUTLIER] = composite_scores
    records = {i: v["subject"] for i, v in known.items() if "subject" in v}
    for column, field_ in zip(SUBJECT_COLUMNS, ("parts_dropped", "removed", "added"),
                              strict=True):
        stats[column] = pd.Series({i: r[field_] for i, r in records.items()}, dtype=float)
    frame = manifest.set_index("image_id", drop=False)
    frame.index.name = None
    frame = frame.join(stats, how="left")
    judged = frame["status"].eq(Status.OK) & frame.index.isin(list(known))
    results = evaluate_all(frame, params.matte.checks, judged, sources=("matte",))
    reasons = reasons_per_row(results, frame.index)
    for image_id in errors:
        reasons[image_id] = [*reasons[image_id], "matte_failed"]
    out = manifest.copy()
    ids = out["image_id"]
    rel = root.relative_to(out_dir) if root.is_relative_to(out_dir) else root
    has = ids.isin(list(known))
    out["matte_path"] = [f"{rel.as_posix()}/images/{Store(Path()).relpath(i, 'png')}" if h
                         else None for i, h in zip(ids, has, strict=True)]
    out["mask_path"] = [f"{rel.as_posix()}/masks/{Store(Path()).relpath(i, 'png')}" if h
                        else None for i, h in zip(ids, has, strict=True)]
    out["matte_path"] = out["matte_path"].astype("string")
    out["mask_path"] = out["mask_path"].astype("string")
    out["subject_by"] = ids.map({i: r["chosen_by"] for i, r in records.items()}).astype("string")
    for col in (*STAT_COLUMNS, COMPOSITE_OUTLIER, *SUBJECT_COLUMNS):
        out[f"m_{col}"] = ids.map(frame[col]).astype("float64").to_numpy()
    for name, result in results.items():
        out[f"m_score_{name}"] = ids.map(result.scores).astype("float64").to_numpy()
    mapped = ids.map(reasons)
    out["matte_reasons"] = [list(r) if isinstance(r, list) else [] for r in mapped]
    out["matte_error"] = ids.map(errors).astype("string")
    live = out["status"].eq(Status.OK)
    failed = live & ids.isin(list(errors))
    flagged = live & ~failed & out["matte_reasons"].map(len).gt(0)
    out.loc[flagged, "status"] = Status.OUTLIER.value
    out.loc[flagged, "reason"] = out.loc[flagged, "matte_reasons"].map(",".join)
    out.loc[failed, "status"] = Status.ERROR.value
    out.loc[failed, "reason"] = "matte_failed"
    return out, results, reasons, frame, judged


def _count(summary: StageSummary, manifest: pd.DataFrame, out: pd.DataFrame) -> None:
    was_live = manifest["status"].eq(Status.OK)
    for status, n in manifest.loc[~was_live, "status"].value_counts().items():
        summary.count(f"passed through ({status})", n=int(n))
    summary.count("matted, kept", n=int((out["status"] == Status.OK).sum()))
    flagged = was_live & out["status"].eq(Status.OUTLIER)
    summary.count("matted, flagged", n=int(flagged.sum()))
    summary.count("failed", n=int((was_live & out["status"].eq(Status.ERROR)).sum()))
    for reasons in out.loc[was_live & ~out["status"].eq(Status.OK), "matte_reasons"]:
        for r in reasons:
            summary.reasons[r] += 1
