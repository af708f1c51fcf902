"""Several annotators' tags for one image -> one merged row per image.

Rules (params ``tags.merge``):
- each annotator's newest submitted annotation for an image counts once; skipped (cancelled)
  and superseded ones do not count;
- ``category`` is the majority of the category votes; a tie is ``disputed``;
- ``reject`` follows ``merge.reject``: ``any`` (one reject vote rejects: the safe default for a
  training set), ``majority`` (the reject choice must win the vote outright, a tie is
  ``disputed``) or ``never`` (reject votes are ignored);
- ``verdict`` is the last word: the reject choice when rejected, else ``category``;
- the box and keypoints are the mean over the annotators who agree with the verdict (over
  everyone who voted when the verdict is ``disputed`` or there was no vote); the box rotation is
  a circular mean, so 359 and 1 degrees average to 0;
- ``kp_annotators`` counts the annotators whose keypoints were averaged and ``kp_spread`` is how
  far apart they clicked (pixels: the root mean of each keypoint coordinate's sample variance;
  NaN with fewer than two): prepare measures the annotators' click error from it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from curate.tags.config import TagsMergeConfig
from curate.tags.labelconfig import TagSchema
from curate.tags.normalise import BBOX, keypoint_columns

DISPUTED = "disputed"


def merged_columns(schema: TagSchema) -> list[str]:
    return ["image_id", "task_id", "verdict", "category", "reject", "n_annotators", "n_agree",
            "agreement", "annotators", "votes", *BBOX, *keypoint_columns(schema.keypoint_labels),
            "kp_annotators", "kp_spread", "note", "updated_at", "problems"]


def _top(votes: Counter[str]) -> str | None:
    """The unique most frequent vote, ``disputed`` on a tie, None without votes."""
    if not votes:
        return None
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return DISPUTED
    return ranked[0][0]


def decide(votes: list[str | None], reject: str | None, rule: str) -> tuple[str | None, str | None]:
    """(verdict, category) from one image's votes (reject choice or category or None)."""
    categories = Counter(v for v in votes if v is not None and v != reject)
    category = _top(categories)
    n_reject = sum(1 for v in votes if reject is not None and v == reject)
    if rule == "any" and n_reject:
        return reject, category
    if rule == "majority":
        everything = Counter(v for v in votes if v is not None)
        return _top(everything), category
    return category, category


def _rotation_mean(chosen: pd.DataFrame) -> pd.Series:
    """Circular mean of ``bbox_rotation`` per image, in [0, 360)."""
    rad = np.deg2rad(chosen["bbox_rotation"])
    parts = pd.DataFrame({"image_id": chosen["image_id"], "s": np.sin(rad), "c": np.cos(rad)})
    means = parts.groupby("image_id", sort=True)[["s", "c"]].mean()
    degrees = np.rad2deg(np.arctan2(means["s"], means["c"])).round(9) % 360.0
    return degrees.where(degrees != 360.0, 0.0)


def _per_image(live: pd.DataFrame, reject: str | None, rule: str) -> pd.DataFrame:
    """One pass in plain Python over the votes: verdicts and the text columns."""
    acc: dict[str, dict] = {}
    for image_id, task_id, annotator, vote, note, problems in zip(
            live["image_id"], live["task_id"], live["annotator"], live["vote"], live["note"],
            live["problems"], strict=True):
        a = acc.setdefault(image_id, {"task_id": task_id, "annotators": [], "votes": [],
                                      "notes": [], "problems": set()})
        a["task_id"] = min(a["task_id"], task_id)
        a["annotators"].append(int(annotator))
        a["votes"].append(vote)
        if note is not None and note is not pd.NA:
            a["notes"].append(note)
        a["problems"].update(problems)
    rows = []
    for image_id, a in acc.items():
        verdict, category = decide(a["votes"], reject, rule)
        counts = Counter(v if v is not None else "(none)" for v in a["votes"])
        rows.append({"image_id": image_id, "task_id": a["task_id"], "verdict": verdict,
                     "category": category,
                     "annotators": ",".join(map(str, sorted(a["annotators"]))),
                     "votes": ",".join(f"{k}:{n}" for k, n in sorted(counts.items())),
                     "note": "\n".join(a["notes"]) or None, "problems": sorted(a["problems"])})
    return pd.DataFrame(rows, columns=["image_id", "task_id", "verdict", "category",
                                       "annotators", "votes", "note", "problems"])


def _keypoint_spread(chosen: pd.DataFrame, columns: list[str]) -> tuple[pd.Series, pd.Series]:
    """Per image: how many annotators gave every keypoint, and the spread of their points."""
    with_points = chosen.dropna(subset=columns) if columns else chosen.iloc[:0]
    grouped = with_points.groupby("image_id", sort=True)
    if not columns:
        return grouped.size(), pd.Series(dtype="float64")
    return grouped.size(), np.sqrt(grouped[columns].var(ddof=1).mean(axis=1))


def merge(tags: pd.DataFrame, schema: TagSchema, cfg: TagsMergeConfig) -> pd.DataFrame:
    """The merged per-image view of a tags table (see module docstring)."""
    live = tags.loc[tags["latest"] & tags["image_id"].notna()].copy()
    live["image_id"] = live["image_id"].astype("object")
    live["vote"] = live["category"].astype("object").where(live["category"].notna(), None)
    if schema.reject is not None and cfg.reject != "never":
        live.loc[live["reject"], "vote"] = schema.reject
    base = _per_image(live, schema.reject, cfg.reject).set_index("image_id").sort_index()
    verdict = live["image_id"].map(base["verdict"])
    decided = verdict.notna() & (verdict != DISPUTED)
    live["agree"] = decided & (live["vote"] == verdict)
    grouped = live.groupby("image_id", sort=True)
    n_agree = grouped["agree"].sum().astype("int64")
    n_annotators = grouped.size()
    # geometry from the annotators who agree; from everyone when nobody can agree
    chosen = live[live["agree"] | live["image_id"].map(n_agree == 0)]
    geometry = [*BBOX[:4], *keypoint_columns(schema.keypoint_labels)]
    means = chosen.groupby("image_id", sort=True)[geometry].mean()
    kp_annotators, kp_spread = _keypoint_spread(chosen, keypoint_columns(schema.keypoint_labels))
    out = base.assign(
        reject=base["verdict"].eq(schema.reject) if schema.reject else False,
        n_annotators=n_annotators, n_agree=n_agree, agreement=n_agree / n_annotators,
        updated_at=grouped["updated_at"].max(),
        bbox_rotation=_rotation_mean(chosen).where(means["bbox_w"].notna()),
        kp_annotators=kp_annotators.reindex(base.index, fill_value=0),
        kp_spread=kp_spread.reindex(base.index),
    ).join(means).reset_index()
    out = out[merged_columns(schema)]
    return out.astype({"image_id": "string", "task_id": "int64", "verdict": "string",
                       "category": "string", "reject": "bool", "n_annotators": "int64",
                       "n_agree": "int64", "agreement": "float64", "annotators": "string",
                       "kp_annotators": "int64", "kp_spread": "float64",
                       "votes": "string", "note": "string",
                       **{c: "float64" for c in (*BBOX, *geometry)}})
