"""Split stage: give every live image a sub-distribution (one GAN is trained per distribution).

Tagged images take their annotators' merged verdict, mapped to a distribution through
``split.distributions[].categories``. Untagged images get the distribution of their k nearest
tagged neighbours in the MobileNetV2 embedding space, with a confidence; below
``split.min_confidence`` they stay ``unassigned`` (they are the ones `curate tags push --strategy
uncertain` sends to annotators). With no tags at all and ``cluster_when_untagged``, spherical
k-means proposes one group per distribution, named ``cluster_<n>`` so nobody mistakes a proposal
for a decision, and the report says so.

Reads data/matte/manifest.parquet and data/tags/merged.parquet (optional); writes
data/split/manifest.parquet (all columns plus ``distribution``, ``dist_source``
tag|propagated|cluster|unassigned, ``dist_confidence``) and data/split/report.json (counts,
cross-validated accuracy of the propagation on the tagged images, least confident images).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from curate import atomic
from curate.config import Params
from curate.console import StageSummary, console
from curate.embeddings import embed_detailed, manifest_items
from curate.manifest import read_table, write_table
from curate.split.propagate import cross_validated_accuracy, kmeans, knn_predict

LEAST_CONFIDENT = 25


@dataclass(frozen=True)
class SplitOptions:
    manifest: Path = Path("data/matte/manifest.parquet")
    tags: Path = Path("data/tags/merged.parquet")
    out_dir: Path = Path("data/split")
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


def assign(live: pd.DataFrame, emb: np.ndarray, tagged: pd.Series, params: Params
           ) -> tuple[pd.DataFrame, dict]:
    """distribution / dist_source / dist_confidence for the live rows, and report figures."""
    cfg = params.split
    names = [d.name for d in cfg.distributions]
    out = pd.DataFrame({"distribution": tagged.to_numpy(), "dist_source": None,
                        "dist_confidence": np.nan}, index=live.index)
    has_tag = tagged.notna().to_numpy()
    valid = np.isfinite(emb).all(axis=1)
    out.loc[has_tag, "dist_source"] = "tag"
    out.loc[has_tag, "dist_confidence"] = 1.0
    report: dict = {"tagged": int(has_tag.sum()), "cv_accuracy": None, "mode": "tags"}
    train = has_tag & valid
    query = ~has_tag & valid
    if train.any():
        labels = np.array([names.index(t) for t in tagged[train]])
        accuracy = cross_validated_accuracy(emb[train], labels, len(names), cfg.k, seed=cfg.seed)
        report["cv_accuracy"] = None if np.isnan(accuracy) else round(accuracy, 4)  # < 4 tags
        if query.any():
            pred = knn_predict(emb[train], labels, emb[query], len(names), cfg.k)
            sure = pred.confidence >= cfg.min_confidence
            idx = np.flatnonzero(query)
            out.iloc[idx, out.columns.get_loc("dist_confidence")] = pred.confidence
            out.iloc[idx, out.columns.get_loc("distribution")] = np.where(
                sure, np.array(names, dtype=object)[pred.labels], None)
            out.iloc[idx, out.columns.get_loc("dist_source")] = np.where(
                sure, "propagated", "unassigned")
    elif cfg.cluster_when_untagged and query.sum() >= len(names):
        report["mode"] = "clusters (no tags: proposed groups, not decisions)"
        groups = kmeans(emb[query], len(names), seed=cfg.seed)
        idx = np.flatnonzero(query)
        out.iloc[idx, out.columns.get_loc("distribution")] = [f"cluster_{g}" for g in groups]
        out.iloc[idx, out.columns.get_loc("dist_source")] = "cluster"
    out.loc[out.dist_source.isna(), "dist_source"] = "unassigned"
    return out, report


def run_split(params: Params, options: SplitOptions = SplitOptions()) -> StageSummary:
    summary = StageSummary("split")
    manifest = read_table(options.manifest)
    tags = read_table(options.tags) if options.tags.exists() else None
    live = manifest[manifest.status == "ok"]
    result = embed_detailed(params, manifest_items(params, live), workers=options.workers,
                            description="split: embeddings")
    summary.cached = result.cached
    tagged = tagged_distribution(live, tags, params)
    assigned, report = assign(live, result.vectors, tagged, params)
    out = manifest.copy()
    out["distribution"] = assigned.distribution.reindex(out.index).astype("string")
    out["dist_source"] = assigned.dist_source.reindex(out.index).astype("string")
    out["dist_confidence"] = assigned.dist_confidence.reindex(out.index).astype("float64")
    write_table(out, options.out_dir / "manifest.parquet", sort_by=["image_id"])

    doubtful = out[out.dist_source.isin(["propagated", "unassigned"])].nsmallest(
        LEAST_CONFIDENT, "dist_confidence")
    report.update({
        "distributions": dict(sorted(Counter(out.distribution.dropna()).items())),
        "sources": dict(sorted(Counter(out.dist_source.dropna()).items())),
        "least_confident": [{"image_id": r.image_id, "confidence": round(r.dist_confidence, 4),
                             "guess": None if pd.isna(r.distribution) else r.distribution, "source_uri": r.source_uri}
                            for r in doubtful.itertuples()],
    })
    atomic.write_text(options.out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    for row in out[out.status == "ok"].itertuples():
        summary.count("unassigned" if pd.isna(row.distribution) else row.distribution,
                      row.dist_source)
    summary.save(options.out_dir / "summary.json")
    summary.print()
    acc = report["cv_accuracy"]
    console.print(f"split: {report['tagged']} tagged images; propagation accuracy by "
                  f"cross-validation {'n/a' if acc is None else f'{acc:.1%}'}; mode: "
                  f"{report['mode']}; report -> {options.out_dir / 'report.json'}")
    return summary
