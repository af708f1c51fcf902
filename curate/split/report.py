"""reports/split.html: what each distribution and each proposed group looks like.

A user with untagged photos gets proposed groups (`cluster_0`, ...) from the split; to name them
(`curate split --name cluster_0=soles`) they must see them. The page shows, per distribution and
per proposed group, its size, how its images were assigned, and a sample grid. The sample is a
seeded draw, so the same data gives the same page. Thumbnails are inline: the file opens from
disk with no server.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from core import atomic
from core.cache import ResultCache
from curate.config import Params
from curate.dedup.report import thumbnails

SAMPLE = 24  # thumbnails per group
TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _sample(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    if len(rows) <= SAMPLE:
        return rows.sort_values("image_id")
    pick = np.random.default_rng(seed).choice(len(rows), SAMPLE, replace=False)
    return rows.iloc[np.sort(pick)]


def _groups(live: pd.DataFrame, column: str, seed: int) -> list[dict[str, Any]]:
    groups = []
    for name, rows in sorted(live.groupby(live[column].fillna("unassigned")), key=lambda g: g[0]):
        groups.append({"name": name, "count": len(rows),
                       "sources": dict(sorted(Counter(rows.dist_source.dropna()).items())),
                       "within": dict(sorted(Counter(rows.distribution.fillna("unassigned")
                                                     ).items())),
                       "sample": _sample(rows, seed)})
    return groups


def write_split_report(path: Path, live: pd.DataFrame, report: dict, params: Params,
                       workers: int) -> None:
    """Render the page for the split stage's live rows and its report figures."""
    dists = _groups(live, "distribution", params.split.seed)
    proposals = _groups(live[live.proposal.notna()], "proposal", params.split.seed)
    shown = pd.concat([g["sample"] for g in (*dists, *proposals)] or [live.head(0)])
    with ResultCache(params.paths.cache / "cache.sqlite") as cache:  # dedup's thumbnails
        thumbs = thumbnails(shown.drop_duplicates("image_id"), params, cache, workers)
    named = report.get("named_proposals") or {}
    for group in (*dists, *proposals):
        group["tiles"] = [{"id": r.image_id, "uri": thumbs.get(r.image_id),
                           "title": f"{r.image_id[:12]} {r.source_uri}"}
                          for r in group.pop("sample").itertuples()]
        group["named"] = named.get(group["name"])
    html = _ENV.get_template("split.html.j2").render(
        report=report, distributions=dists, proposals=proposals,
        configured=[d.name for d in params.split.distributions])
    atomic.write_text(Path(path), html)
