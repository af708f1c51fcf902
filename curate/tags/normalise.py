"""A Label Studio JSON export -> one table row per annotation, geometry in source pixels.

Label Studio keeps geometry in percent (0-100) of ``original_width``/``original_height``: a
rectangle's x, y is its top-left corner and ``rotation`` turns it (degrees, clockwise) around
that corner; a keypoint's ``width`` is only its display size. We convert to pixels of the image
as the browser showed it, which is the EXIF-upright image `core.imageio.decode` returns.

The server stores whatever a client sends, so every result is checked against the labeling
config (`TagSchema`); what does not fit is kept out of the tag and listed in ``problems``
(``code:detail`` strings) instead of failing the run.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from curate.tags.labelconfig import TagSchema

BBOX = ("bbox_x", "bbox_y", "bbox_w", "bbox_h", "bbox_rotation")
_STORE_NAME = re.compile(r"([0-9a-f]{64})\.[A-Za-z0-9]+(?:$|[?#&])")
_EDGE_TOLERANCE = 0.5  # percent: Label Studio lets a handle poke slightly past the border


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while an export is parsed and normalised.

    A 50,000-annotation export is millions of small dicts and lists, and every few hundred
    allocations the collector rescans them all: with it running, json.loads and the
    normalisation take about three times as long (6.4 s instead of 2.5 s of CPU on the
    benchmark file). Nothing here makes reference cycles, so nothing is leaked meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def keypoint_columns(labels: Iterable[str]) -> list[str]:
    """Column names of the named keypoints (x then y for each)."""
    return [f"kp_{name}_{axis}" for name in labels for axis in ("x", "y")]


def tag_columns(schema: TagSchema) -> list[str]:
    """Every column of tags.parquet, in order."""
    return ["image_id", "task_id", "annotation_id", "annotator", "annotator_email", "cancelled",
            "latest", "category", "reject", *BBOX, *keypoint_columns(schema.keypoint_labels),
            "note", "original_width", "original_height", "created_at", "updated_at",
            "lead_time", "n_regions", "problems"]


@dataclass
class _Row:
    """One annotation being read; becomes one table row."""

    task_id: int
    image_id: str | None
    annotation_id: int
    annotator: int | None
    annotator_email: str | None
    cancelled: bool
    created_at: str | None
    updated_at: str | None
    lead_time: float | None
    n_regions: int
    categories: list[str] = field(default_factory=list)
    reject: bool = False
    bbox: tuple[float, float, float, float, float] | None = None
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)


def image_id_of(task: dict[str, Any], schema: TagSchema) -> str | None:
    """Our image id: from the task data, else from a store file name in the image URL."""
    data = task.get("data") or {}
    image_id = data.get("image_id")
    if isinstance(image_id, str) and image_id:
        return image_id
    match = _STORE_NAME.search(str(data.get(schema.image_key) or ""))
    return match.group(1) if match else None


def _size(region: dict[str, Any]) -> tuple[int, int] | None:
    w, h = region.get("original_width"), region.get("original_height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        return int(w), int(h)
    return None


def _inside(*values: float) -> bool:
    return all(-_EDGE_TOLERANCE <= v <= 100 + _EDGE_TOLERANCE for v in values)


def _read_choices(row: _Row, value: dict[str, Any], schema: TagSchema) -> None:
    for choice in value.get("choices") or []:
        if choice == schema.reject and schema.reject is not None:
            row.reject = True
        elif choice in schema.choices:
            row.categories.append(choice)
        else:
            row.problems.append(f"unknown_choice:{choice}")


def _read_rectangle(row: _Row, value: dict[str, Any], size: tuple[int, int] | None) -> None:
    if row.bbox is not None:
        row.problems.append("several_boxes:first kept")
        return
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        rotation = float(value.get("rotation") or 0.0) % 360.0
    except (KeyError, TypeError, ValueError):
        row.problems.append("bad_box:missing x/y/width/height")
        return
    if size is None:
        row.problems.append("no_size:box without original_width/height")
        return
    if w <= 0 or h <= 0 or (rotation == 0 and not _inside(x, y, x + w, y + h)):
        row.problems.append(f"box_outside:x={x:g} y={y:g} w={w:g} h={h:g}")
        return
    width, height = size
    row.bbox = (x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0,
                rotation)


def _read_keypoint(row: _Row, value: dict[str, Any], size: tuple[int, int] | None,
                   schema: TagSchema) -> None:
    labels = value.get("keypointlabels") or []
    if len(labels) != 1 or labels[0] not in schema.keypoint_labels:
        row.problems.append(f"unknown_keypoint:{','.join(map(str, labels)) or '(no label)'}")
        return
    try:
        x, y = float(value["x"]), float(value["y"])
    except (KeyError, TypeError, ValueError):
        row.problems.append("bad_keypoint:missing x/y")
        return
    if size is None:
        row.problems.append("no_size:keypoint without original_width/height")
        return
    if not _inside(x, y):
        row.problems.append(f"keypoint_outside:{labels[0]}")
        return
    if labels[0] in row.keypoints:
        row.problems.append(f"repeated_keypoint:{labels[0]} (last kept)")
    row.keypoints[labels[0]] = (x * size[0] / 100.0, y * size[1] / 100.0)


_TYPES = {"category": {"choices"}, "crop": {"rectanglelabels", "rectangle"},
          "keypoints": {"keypointlabels", "keypoint"}, "note": {"textarea"}}


def _checked_size(row: _Row, region: dict[str, Any], stored: tuple[int, int] | None
                  ) -> tuple[int, int] | None:
    """The size to turn percents into pixels: the stored image's EXIF-upright size when
    known, which is what the percents are of even when the annotation says otherwise (an
    export made against another copy, a task re-pointed to a resized file)."""
    declared = _size(region)
    if stored is None or declared is None or declared == stored:
        return declared or stored
    problem = (f"size_mismatch:annotation {declared[0]}x{declared[1]}, image "
               f"{stored[0]}x{stored[1]} (converted with the image's)")
    if problem not in row.problems:
        row.problems.append(problem)
    return stored


def _read_region(row: _Row, region: dict[str, Any], schema: TagSchema,
                 roles: dict[str, str], stored: tuple[int, int] | None = None) -> None:
    role = roles.get(region.get("from_name", ""))
    kind = str(region.get("type", "")).lower()
    if role is None:
        row.problems.append(f"unknown_control:{region.get('from_name')}")
        return
    if kind not in _TYPES[role]:
        row.problems.append(f"wrong_type:{region.get('from_name')} is {kind}")
        return
    value = region.get("value") or {}
    size = _checked_size(row, region, stored)
    if size is not None:
        row.size = row.size or size
        if region.get("image_rotation"):
            row.problems.append(f"image_rotated:{region['image_rotation']}")
    if role == "category":
        _read_choices(row, value, schema)
    elif role == "crop":
        _read_rectangle(row, value, size)
    elif role == "keypoints":
        _read_keypoint(row, value, size, schema)
    else:
        row.notes += [t for t in (value.get("text") or []) if isinstance(t, str) and t.strip()]


def _annotator(completed_by: Any) -> tuple[int | None, str | None]:
    """``completed_by`` is a user id, or a user object when the export expands it."""
    if isinstance(completed_by, dict):
        return completed_by.get("id"), completed_by.get("email")
    return (completed_by if isinstance(completed_by, int) else None), None


def _read_annotation(task_id: int, image_id: str | None, ann: dict[str, Any],
                     schema: TagSchema, roles: dict[str, str],
                     stored: tuple[int, int] | None = None) -> _Row:
    annotator, email = _annotator(ann.get("completed_by"))
    result = ann.get("result") or []
    row = _Row(task_id=task_id, image_id=image_id, annotation_id=int(ann.get("id") or 0),
               annotator=annotator, annotator_email=email,
               cancelled=bool(ann.get("was_cancelled")), created_at=ann.get("created_at"),
               updated_at=ann.get("updated_at") or ann.get("created_at"),
               lead_time=ann.get("lead_time"), n_regions=len(result))
    if image_id is None:
        row.problems.append("no_image_id:task data has no image_id")
    if annotator is None:
        row.problems.append("no_annotator")
    if not row.cancelled:
        for region in result:
            if isinstance(region, dict):
                _read_region(row, region, schema, roles, stored)
            else:
                row.problems.append("bad_region:not an object")
        if len(row.categories) > 1:
            row.problems.append(f"several_categories:{','.join(row.categories)}")
    return row


def _table(rows: list[_Row], schema: TagSchema) -> pd.DataFrame:
    kp = schema.keypoint_labels
    nan = float("nan")
    cols: dict[str, list[Any]] = {c: [] for c in tag_columns(schema)}
    for r in rows:
        bbox = r.bbox or (nan,) * 5
        cols["image_id"].append(r.image_id)
        cols["task_id"].append(r.task_id)
        cols["annotation_id"].append(r.annotation_id)
        cols["annotator"].append(r.annotator)
        cols["annotator_email"].append(r.annotator_email)
        cols["cancelled"].append(r.cancelled)
        cols["category"].append(r.categories[0] if len(r.categories) == 1 else None)
        cols["reject"].append(r.reject)
        for name, v in zip(BBOX, bbox, strict=True):
            cols[name].append(v)
        for name in kp:
            x, y = r.keypoints.get(name, (nan, nan))
            cols[f"kp_{name}_x"].append(x)
            cols[f"kp_{name}_y"].append(y)
        cols["note"].append("\n".join(r.notes) if r.notes else None)
        cols["original_width"].append(r.size[0] if r.size else None)
        cols["original_height"].append(r.size[1] if r.size else None)
        cols["created_at"].append(r.created_at)
        cols["updated_at"].append(r.updated_at)
        cols["lead_time"].append(r.lead_time)
        cols["n_regions"].append(r.n_regions)
        cols["problems"].append(r.problems)
    cols["latest"] = [False] * len(rows)
    df = pd.DataFrame(cols, columns=tag_columns(schema))
    df = df.astype({"image_id": "string", "task_id": "int64", "annotation_id": "int64",
                    "annotator": "Int64", "annotator_email": "string", "cancelled": "bool",
                    "category": "string", "reject": "bool", "note": "string",
                    "original_width": "Int64", "original_height": "Int64",
                    "lead_time": "float64", "n_regions": "int64",
                    **{c: "float64" for c in (*BBOX, *keypoint_columns(kp))}})
    for col in ("created_at", "updated_at"):
        df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    return df


def mark_latest(df: pd.DataFrame) -> pd.DataFrame:
    """Flag each annotator's newest submitted (not cancelled) annotation per image."""
    live = df[~df["cancelled"] & df["annotator"].notna()]
    key = live["image_id"].astype("object").where(live["image_id"].notna(),
                                                  "task:" + live["task_id"].astype(str))
    order = live.assign(_key=key).sort_values(["_key", "annotator", "updated_at",
                                               "annotation_id"], kind="stable")
    newest = order.drop_duplicates(["_key", "annotator"], keep="last").index
    df = df.copy()
    df["latest"] = df.index.isin(newest)
    return df


def normalise(export: list[dict[str, Any]], schema: TagSchema,
              sizes: Mapping[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """The export's annotations as a table (see module docstring), cancelled ones included.

    `sizes` (image id -> EXIF-upright width, height of the stored image) checks the size each
    annotation declares; geometry is converted with the stored size (see `_checked_size`).
    """
    if not isinstance(export, list):
        raise ValueError("not a Label Studio JSON export: expected a list of tasks "  # noqa: TRY004
                         "(export with format JSON, not JSON_MIN or CSV)")
    roles = schema.controls
    rows: list[_Row] = []
    for task in export:
        if not isinstance(task, dict) or "id" not in task:
            raise ValueError("not a Label Studio JSON export: a task without an id")
        image_id = image_id_of(task, schema)
        for ann in task.get("annotations") or []:
            stored = sizes.get(image_id) if sizes is not None and image_id else None
            rows.append(_read_annotation(int(task["id"]), image_id, ann, schema, roles,
                                         stored))
    df = mark_latest(_table(rows, schema))
    return df.sort_values(["image_id", "annotator", "annotation_id"], kind="stable",
                          na_position="last", ignore_index=True)


def pending_tasks(export: list[dict[str, Any]]) -> int:
    """Tasks nobody has submitted yet (for the summary)."""
    return sum(1 for t in export
               if not any(not a.get("was_cancelled") for a in t.get("annotations") or []))

