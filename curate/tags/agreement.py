"""How much annotators agree: counts per category and Cohen's kappa for each pair.

Printed at the end of `curate tags pull/import` and saved as a DVC metrics file, so a drop in
agreement after a labeling-guide change shows up in `dvc metrics diff`. Only deterministic
figures go in (no timings).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pandas as pd
from rich.table import Table

from core.console import console
from curate.tags.labelconfig import TagSchema


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined.

    Undefined means chance agreement is certain (both raters used one and the same label), where
    kappa is 0/0.
    """
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _votes(tags: pd.DataFrame, schema: TagSchema) -> pd.DataFrame:
    """image_id, annotator, vote (category or reject choice) of the counted annotations."""
    live = tags[tags["latest"] & tags["image_id"].notna()]
    vote = live["category"].astype("object").where(live["category"].notna(), None)
    if schema.reject is not None:
        vote = vote.where(~live["reject"], schema.reject)
    out = pd.DataFrame({"image_id": live["image_id"].astype("object"),
                        "annotator": live["annotator"].astype("int64"), "vote": vote})
    return out[out["vote"].notna()]


def summarise(tags: pd.DataFrame, merged: pd.DataFrame, schema: TagSchema,
              pending: int = 0) -> dict[str, Any]:
    """The agreement summary as a JSON-able dict."""
    votes = _votes(tags, schema)
    by_annotator: dict[str, dict[str, int]] = {}
    for annotator, group in votes.groupby("annotator", sort=True):
        by_annotator[str(annotator)] = dict(sorted(Counter(group["vote"]).items()))
    table = votes.pivot_table(index="image_id", columns="annotator", values="vote",
                              aggfunc="first") if len(votes) else pd.DataFrame()
    pairs = []
    total_n = total_agree = 0
    for a, b in itertools.combinations(sorted(table.columns), 2):
        both = table[[a, b]].dropna()
        if both.empty:
            continue
        la, lb = both[a].tolist(), both[b].tolist()
        agree = sum(x == y for x, y in zip(la, lb, strict=True))
        kappa = cohen_kappa(la, lb)
        pairs.append({"annotators": [int(a), int(b)], "images": len(both),
                      "agreement": round(agree / len(both), 6),
                      "kappa": None if kappa is None else round(kappa, 6)})
        total_n += len(both)
        total_agree += agree
    problems = Counter(p.split(":", 1)[0] for ps in tags["problems"] for p in ps)
    return {
        "images": len(merged),
        "annotations": int((~tags["cancelled"]).sum()),
        "cancelled": int(tags["cancelled"].sum()),
        "superseded": int((~tags["cancelled"] & ~tags["latest"]).sum()),
        "pending_tasks": pending,
        "verdicts": dict(sorted(Counter(merged["verdict"].fillna("(none)")).items())),
        "multi_annotated": int((merged["n_annotators"] > 1).sum()),
        "votes_per_annotator": by_annotator,
        "pairwise": pairs,
        "agreement": round(total_agree / total_n, 6) if total_n else None,
        "problems": dict(sorted(problems.items())),
    }


def print_summary(summary: dict[str, Any]) -> None:
    """One screen: verdict counts, per-pair agreement and kappa, problems."""
    table = Table(title="tags: verdicts", header_style="bold")
    table.add_column("verdict")
    table.add_column("images", justify="right")
    for verdict, n in summary["verdicts"].items():
        table.add_row(verdict, f"{n:,}")
    console.print(table)
    if summary["pairwise"]:
        pairs = Table(title="tags: agreement between annotators", header_style="bold")
        for col in ("annotators", "images both tagged", "agreement", "Cohen's kappa"):
            pairs.add_column(col, justify="right")
        for p in summary["pairwise"]:
            kappa = "n/a" if p["kappa"] is None else f"{p['kappa']:.3f}"
            pairs.add_row(" vs ".join(map(str, p["annotators"])), f"{p['images']:,}",
                          f"{p['agreement']:.1%}", kappa)
        console.print(pairs)
    console.print(
        f"tags: {summary['images']:,} images tagged from {summary['annotations']:,} annotations "
        f"({summary['superseded']:,} superseded, {summary['cancelled']:,} skipped), "
        f"{summary['pending_tasks']:,} tasks waiting for annotators")
    if summary["problems"]:
        listed = ", ".join(f"{k}: {n}" for k, n in summary["problems"].items())
        console.print(f"[yellow]tags: results that do not fit the labeling config[/] ({listed}); "
                      "see the problems column of data/tags/tags.parquet")
