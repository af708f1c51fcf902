"""Split stage: give every live image a sub-distribution (one GAN is trained per distribution).

Tagged images take their annotators' merged verdict, mapped to a distribution through
``split.distributions[].categories``. Untagged images get the distribution of their k nearest
tagged neighbours in the MobileNetV2 embedding space, with a confidence; below
``split.min_confidence`` they stay ``unassigned`` (they are the ones `curate tags push --strategy
uncertain` sends to annotators). With no tags at all (``cluster_when_untagged``), or when a
distribution names some, spherical k-means proposes groups, ``cluster_0`` the largest: named
so nobody mistakes a proposal for a decision. A distribution that lists a group in
``proposals`` takes its undecided images, and a ``catch_all`` distribution takes whatever is
still undecided (the first run's ``all``).

Reads data/matte/manifest.parquet and data/tags/merged.parquet (optional); writes
data/split/manifest.parquet (all columns plus ``distribution``, ``dist_source``
tag|propagated|proposal|catch_all|unassigned, ``dist_confidence``, ``proposal``),
data/split/report.json (counts, cross-validated accuracy of the propagation on the tagged
images, least confident images, proposed groups) and reports/split.html (a sample grid per
distribution and per proposed group).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import atomic
from core.console import StageSummary, console
from core.manifest import read_table, write_table
from core.stage import StageResult, Status
from curate.config import Params
from curate.embeddings import embed_detailed, manifest_items
from curate.split.propagate import cross_validated_accuracy, kmeans, knn_predict
from curate.split.report import write_split_report

LEAST_CONFIDENT = 25
MIN_VOTERS = 3  # tagged neighbours voting, however few tags a category has


@dataclass(frozen=True)
class SplitOptions:
    manifest: Path = Path("data/matte/manifest.parquet")
    tags: Path = Path("data/tags/merged.parquet")
    out_dir: Path = Path("data/split")
    report: Path | None = None  # default <paths.reports>/split.html
    workers: int | None = None


def category_map(params: Params) -> dict[str, str]:
    """Tag category -> distribution name."""
    return {c: d.name for d in params.split.distributions for c in d.categories}


def tagged_distribution(live: pd.DataFrame, tags: pd.DataFrame | None, params: Params
                        ) -> pd.Series:
    """Distribution from the merged tags for each live image (None where untagged/disputed)."""
    if tags is None or tags.empty:
        return pd.Series([None] * len(live), index=live.index, dtype="object")
    verdict = dict(zip(tags.image_id, tags.verdict))
    mapping = category_map(params)
    return live.image_id.map(lambda i: mapping.get(verdict.get(i))).astype("object")


def propose(emb: np.ndarray, n: int, seed: int, image_ids: np.ndarray) -> np.ndarray:
    """k-means groups named ``cluster_<i>``, largest first (ties: smallest image id).

    The k-means index of a group is an accident of seeding; numbering by size keeps a name on
    the same kind of image when a few images are added, which a user who named it relies on.
    """
    groups = kmeans(emb, n, seed=seed)
    order = sorted(range(n), key=lambda g: (-int((groups == g).sum()),
                                            min(image_ids[groups == g], default="")))
    rank = {g: i for i, g in enumerate(order)}
    return np.array([f"cluster_{rank[g]}" for g in groups], dtype=object)


def assign(live: pd.DataFrame, emb: np.ndarray, tagged: pd.Series, params: Params
           ) -> tuple[pd.DataFrame, dict]:
    """distribution / dist_source / dist_confidence / proposal for the live rows, and report
    figures.

    Each image takes the first rule that decides: its annotators' tag; the k-NN vote of tagged
    neighbours at ``min_confidence`` or more; the distribution that names its proposed group
    (``proposals``); the ``catch_all`` distribution; else it stays ``unassigned``.
    """
    cfg = params.split
    names = [d.name for d in cfg.distributions]
    out = pd.DataFrame({"distribution": tagged.to_numpy(), "dist_source": None,
                        "dist_confidence": np.nan, "proposal": None}, index=live.index)
    has_tag = tagged.notna().to_numpy()
    valid = np.isfinite(emb).all(axis=1)
    out.loc[has_tag, "dist_source"] = "tag"
    out.loc[has_tag, "dist_confidence"] = 1.0
    report: dict = {"tagged": int(has_tag.sum()), "cv_accuracy": None, "mode": "tags"}
    train = has_tag & valid
    query = ~has_tag & valid
    if train.any():
        labels = np.array([names.index(t) for t in tagged[train]])
        # An image among one category's tags is unanimous only when k is at most that
        # category's tag count: with 6 pov tags and k = 10, no image could be given pov at 0.7
        # confidence. So k is at most the smallest tagged category's count, and at least
        # MIN_VOTERS, or a single tag would decide alone with full confidence.
        counts = np.bincount(labels)
        k = min(cfg.k, max(MIN_VOTERS, int(counts[counts > 0].min())))
        report["k"] = k
        accuracy = cross_validated_accuracy(emb[train], labels, len(names), k, seed=cfg.seed)
        report["cv_accuracy"] = None if np.isnan(accuracy) else round(accuracy, 4)  # < 4 tags
        if query.any():
            pred = knn_predict(emb[train], labels, emb[query], len(names), k)
            sure = pred.confidence >= cfg.min_confidence
            idx = np.flatnonzero(query)
            out.iloc[idx, out.columns.get_loc("dist_confidence")] = pred.confidence
            out.iloc[idx, out.columns.get_loc("distribution")] = np.where(
                sure, np.array(names, dtype=object)[pred.labels], None)
            out.iloc[idx, out.columns.get_loc("dist_source")] = np.where(
                sure, "propagated", None)
    named = {p: d.name for d in cfg.distributions for p in d.proposals}
    wanted = bool(named) or (not train.any() and cfg.cluster_when_untagged)
    if wanted and valid.sum() >= cfg.n_proposals:
        idx = np.flatnonzero(valid)
        out.iloc[idx, out.columns.get_loc("proposal")] = propose(
            emb[valid], cfg.n_proposals, cfg.seed, live.image_id.astype(str).to_numpy()[idx])
        if not train.any():
            report["mode"] = "proposals (no tags: proposed groups, not decisions)"
        report["proposals"] = dict(sorted(Counter(out.proposal.dropna()).items()))
        report["named_proposals"] = named
        open_rows = out.dist_source.isna() & out.proposal.isin(list(named))
        out.loc[open_rows, "distribution"] = out.loc[open_rows, "proposal"].map(named)
        out.loc[open_rows, "dist_source"] = "proposal"
    catch_all = next((d.name for d in cfg.distributions if d.catch_all), None)
    if catch_all is not None:
        open_rows = out.dist_source.isna()
        out.loc[open_rows, "distribution"] = catch_all
        out.loc[open_rows, "dist_source"] = "catch_all"
    out.loc[out.dist_source.isna(), "distribution"] = None
    out.loc[out.dist_source.isna(), "dist_source"] = "unassigned"
    return out, report


def run_split(params: Params, options: SplitOptions = SplitOptions()) -> StageResult:
    """Assign every live image a distribution; write manifest, report.json, summary and report.

    ``computed``: images embedded now (the rest came from the embedding cache).
    """
    summary = StageSummary("split")
    manifest = read_table(options.manifest)
    tags = read_table(options.tags) if options.tags.exists() else None
    live = manifest[manifest.status == Status.OK]
    result = embed_detailed(params, manifest_items(params, live), workers=options.workers,
                            description="split: embeddings")
    summary.cached = result.cached
    tagged = tagged_distribution(live, tags, params)
    assigned, report = assign(live, result.vectors, tagged, params)
    out = manifest.copy()
    out["distribution"] = assigned.distribution.reindex(out.index).astype("string")
    out["dist_source"] = assigned.dist_source.reindex(out.index).astype("string")
    out["dist_confidence"] = assigned.dist_confidence.reindex(out.index).astype("float64")
    out["proposal"] = assigned.proposal.reindex(out.index).astype("string")
    write_table(out, options.out_dir / "manifest.parquet", sort_by=["image_id"])

    voted = out[(out.dist_source != "tag") & out.dist_confidence.notna()]
    doubtful = voted.nsmallest(LEAST_CONFIDENT, "dist_confidence")
    report.update({
        "distributions": dict(sorted(Counter(out.distribution.dropna()).items())),
        "sources": dict(sorted(Counter(out.dist_source.dropna()).items())),
        "least_confident": [{"image_id": r.image_id, "confidence": round(r.dist_confidence, 4),
                             "guess": None if pd.isna(r.distribution) else r.distribution,
                             "source_uri": r.source_uri}
                            for r in doubtful.itertuples()],
    })
    atomic.write_text(options.out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    report_path = options.report or params.paths.reports / "split.html"
    write_split_report(report_path, out[out.status == Status.OK], report, params,
                       options.workers or params.n_workers)
    for row in out[out.status == Status.OK].itertuples():
        summary.count("unassigned" if pd.isna(row.distribution) else row.distribution,
                      row.dist_source)
    summary.save(options.out_dir / "summary.json")
    summary.print()
    acc = report["cv_accuracy"]
    console.print(f"split: {report['tagged']} tagged images; propagation accuracy by "
                  f"cross-validation {'n/a' if acc is None else f'{acc:.1%}'}; mode: "
                  f"{report['mode']}; report -> {report_path}")
    for hint in next_steps(report, params):
        console.print(f"[yellow]next:[/] {hint}")
    return StageResult(summary, {"manifest": options.out_dir / "manifest.parquet",
                                 "report_json": options.out_dir / "report.json",
                                 "summary": options.out_dir / "summary.json",
                                 "report": report_path},
                       computed=result.computed)


def next_steps(report: dict, params: Params) -> list[str]:
    """What a user with only proposals, or with empty distributions, can do about it."""
    hints = []
    proposals = report.get("proposals") or {}
    named = report.get("named_proposals") or {}
    unnamed = {p: n for p, n in proposals.items() if p not in named}
    if unnamed and report["tagged"] == 0:
        groups = ", ".join(f"{p} ({n})" for p, n in unnamed.items())
        hints.append(f"the split proposed {groups}: look at their grids in the report and name "
                     "the ones you want as datasets, e.g. `curate split --name cluster_0=NAME`, "
                     "or tag a few images (`curate tags push --strategy diverse -n 50`)")
    empty = [d.name for d in params.split.distributions
             if d.name not in report["distributions"]]
    if empty:
        hints.append(f"no live images in {', '.join(empty)}: `dvc repro` will stop at their "
                     "prepare stage; tag images of these categories or name proposals for them")
    return hints
