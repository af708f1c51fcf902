"""A Label Studio JSON export snapshot for the demo, in the exact shape Label Studio writes.

The tags stage must read real exports, so the snapshot mimics one: one object per task with
``data`` (the image URL and our image id), ``annotations`` (each with ``completed_by``,
``was_cancelled``, timestamps and a ``result`` list of regions whose geometry is in percent of
``original_width``/``original_height``), empty ``predictions`` and ``drafts``. The annotators
behave like people: small jitter in boxes and points, a few disagreements on the category,
rejects, a skipped (cancelled) task, and annotations corrected later.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

#: Label Studio user ids of the two demo annotators.
ANNOTATORS = {1: "alice@example.com", 2: "bob@example.com"}
FROM_NAMES = {"category": "category", "crop": "crop", "keypoints": "keypoints", "note": "note"}
PROJECT_ID = 1
_EPOCH = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class TaskTruth:
    """What the annotators see and would ideally mark, for one image."""

    task_id: int
    image_id: str
    image_url: str
    width: int
    height: int
    category: str
    bbox: tuple[float, float, float, float]
    heel: tuple[float, float]
    toe: tuple[float, float]
    should_reject: bool = False
    keypoint_names: tuple[str, str] = ("heel", "toe")  # labels of the two points (heel, toe)


def _stamp(minutes: float) -> str:
    return (_EPOCH + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _region_id(rng: np.random.Generator) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 10))


def _pct(value: float, total: int) -> float:
    return round(100.0 * value / total, 4)


def _regions(t: TaskTruth, rng: np.random.Generator, category: str, jitter: float,
             note: str | None) -> list[dict]:
    """The result list of one submitted annotation (percent coordinates, as Label Studio does)."""
    common = {"original_width": t.width, "original_height": t.height, "image_rotation": 0,
              "to_name": "image", "origin": "manual"}
    size = max(t.width, t.height)

    def j(v: float) -> float:
        return float(v + rng.normal(0, jitter * size))

    x, y, w, h = t.bbox
    x0, y0 = j(x), j(y)
    x1, y1 = j(x + w), j(y + h)
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(t.width), x1), min(float(t.height), y1)
    out = [
        {**common, "id": _region_id(rng), "from_name": FROM_NAMES["category"], "type": "choices",
         "value": {"choices": [category]}},
        {**common, "id": _region_id(rng), "from_name": FROM_NAMES["crop"],
         "type": "rectanglelabels",
         "value": {"x": _pct(x0, t.width), "y": _pct(y0, t.height),
                   "width": _pct(x1 - x0, t.width), "height": _pct(y1 - y0, t.height),
                   "rotation": 0, "rectanglelabels": ["crop"]}},
    ]
    for label, (px, py) in zip(t.keypoint_names, (t.heel, t.toe)):
        out.append({**common, "id": _region_id(rng), "from_name": FROM_NAMES["keypoints"],
                    "type": "keypointlabels",
                    "value": {"x": _pct(j(px), t.width), "y": _pct(j(py), t.height),
                              "width": 0.6, "keypointlabels": [label]}})
    if note:
        out.append({**common, "id": _region_id(rng), "from_name": FROM_NAMES["note"],
                    "type": "textarea", "value": {"text": [note]}})
    return out


def _annotation(ann_id: int, task_id: int, user: int, result: list[dict], created: float,
                updated: float, cancelled: bool = False) -> dict:
    return {
        "id": ann_id, "completed_by": user, "result": result, "was_cancelled": cancelled,
        "ground_truth": False, "created_at": _stamp(created), "updated_at": _stamp(updated),
        "draft_created_at": None, "lead_time": round(updated - created, 3) * 60,
        "prediction": {}, "result_count": len(result), "unique_id": str(uuid.UUID(int=ann_id)),
        "import_id": None, "last_action": None, "bulk_created": False, "task": task_id,
        "project": PROJECT_ID, "updated_by": user, "parent_prediction": None,
        "parent_annotation": None, "last_created_by": None,
    }


def build_export(tasks: list[TaskTruth], categories: tuple[str, ...], seed: int
                 ) -> tuple[list[dict], dict[int, str]]:
    """The export list, and per task what a correct merge must conclude (category or disputed).

    Every task gets a submission from annotator 1; about a third also from annotator 2, who
    disagrees on the category now and then. A few tasks are skipped by annotator 2 (cancelled),
    a few of annotator 1's answers are corrected later (a second, newer annotation), and images
    that should be rejected get the ``reject`` choice.
    """
    rng = np.random.default_rng([seed, 7])
    export: list[dict] = []
    merged: dict[int, str] = {}
    ann_id = 0
    for t in tasks:
        anns: list[dict] = []
        minute = float(t.task_id * 3)
        truth = "reject" if t.should_reject else t.category
        wrong = next(c for c in categories if c != t.category)
        roll = rng.random()
        # Annotator 1: correct; sometimes first wrong, then corrected in a newer annotation.
        if roll < 0.06 and not t.should_reject:
            ann_id += 1
            anns.append(_annotation(ann_id, t.task_id, 1, _regions(t, rng, wrong, 0.004, None),
                                    minute, minute + 0.5))
        ann_id += 1
        note = "blurry, unusable" if t.should_reject else None
        anns.append(_annotation(ann_id, t.task_id, 1, _regions(t, rng, truth, 0.004, note),
                                minute + 1, minute + 2 + 60 * (roll < 0.06)))
        verdict = truth
        second = rng.random()
        if second < 0.33:
            ann_id += 1
            if second < 0.04:  # skipped: must be ignored by the merge
                anns.append(_annotation(ann_id, t.task_id, 2, [], minute + 5, minute + 5.2,
                                        cancelled=True))
            else:
                disagree = second < 0.10 and not t.should_reject
                label = wrong if disagree else truth
                anns.append(_annotation(ann_id, t.task_id, 2,
                                        _regions(t, rng, label, 0.006, None),
                                        minute + 6, minute + 7))
                verdict = "disputed" if disagree else truth
        merged[t.task_id] = verdict
        export.append({
            "id": t.task_id, "annotations": anns, "file_upload": None, "drafts": [],
            "predictions": [], "data": {"image": t.image_url, "image_id": t.image_id},
            "meta": {}, "created_at": _stamp(0), "updated_at": _stamp(minute + 7),
            "inner_id": t.task_id, "total_annotations": sum(not a["was_cancelled"] for a in anns),
            "cancelled_annotations": sum(a["was_cancelled"] for a in anns),
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": PROJECT_ID, "updated_by": 1,
            "comment_authors": [],
        })
    return export, merged
