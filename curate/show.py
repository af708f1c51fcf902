"""`curate show ID`: one image's whole story, gathered from every stage's outputs.

The manifests already answer "why is this image gone?", but the answer is spread over a dozen
files of ~100 columns each, and a data engineer asking about one image should not have to load
them into a notebook. This module reads, for one image id (a prefix is enough):

- <paths.data>/ingest/manifest.parquet and rejects.parquet: its sources, or why it was refused;
- dedup/manifest.parquet: its cluster, the kept image, the other members and their links;
- tags/merged.parquet and tags/tags.parquet: the merged verdict and each annotator's tag;
- quality/ and matte/manifest.parquet (+ summary.json for the cut-offs actually applied): every
  check's measured value, cut-off and severity, and which ones flagged it;
- split/manifest.parquet: its distribution, how it was assigned and with what confidence;
- prepare/NAME/manifest.parquet and datasets/NAME.json: its crops, their cached PNGs and
  their member names in each dataset zip.

Paths follow params.yaml `paths`: each stage's outputs under `<paths.data>/<stage>/` (where
dvc.yaml and the commands' defaults put them with `paths.data: data`; `train` finds datasets
the same way), prepared PNGs under `<paths.cache>/prepare/`. Every read is one image's rows
(pyarrow filters on `image_id`) and, for the stage manifests, only the columns that stage added
(each manifest repeats every upstream column). A missing output means the stage has not run,
which is shown, never an error. Writes nothing.

`gather` returns plain JSON types only (NaN is None, timestamps are ISO strings), so
`--json` is `json.dumps(..., sort_keys=True)` of it and the tables are rendered from the same
dictionary: the two outputs cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from core.errors import ParamsError, UserError
from core.stage import Status
from curate.config import Params
from curate.quality.checks import CHECKS

#: Stages whose manifests chain (each adds columns to its input's), in pipeline order.
CHAIN = ("ingest", "dedup", "quality", "matte", "split")
#: Columns every stage section carries, whatever the stage added.
ROW_KEYS = ("image_id", "status", "reason")
MAX_CANDIDATES = 10
SHORT_ID = 16  # hex digits of an id in tables: unique in any real collection, and a prefix
HEX = re.compile(r"[0-9a-f]{1,64}")
#: Dedup columns read for the other members of the image's cluster.
MEMBER_COLUMNS = ("image_id", "status", "source_uri", "dup_kind", "distance", "linked_to",
                  "hash_distance", "cosine", "kept_because", "transform", "framing")
NOT_RUN, ABSENT, PRESENT = "not_run", "absent", "present"

Facts = dict[str, Any]


class UnknownImage(UserError, LookupError):
    """No ingested image or rejected input has an id starting with the prefix (exit 1)."""


class AmbiguousImage(ParamsError, LookupError):
    """Several ids start with the prefix (exit 2); `candidates` holds the first ones."""

    def __init__(self, prefix: str, candidates: list[str], total: int) -> None:
        more = f"\n  ... and {total - len(candidates)} more" if total > len(candidates) else ""
        super().__init__(f"{prefix!r} matches {total} images; give more digits:\n  "
                         + "\n  ".join(candidates) + more)
        self.candidates = candidates
        self.total = total


@dataclass(frozen=True)
class Locations:
    """Where each stage writes, as params.yaml `paths` places them."""

    data: Path
    store: Path
    cache: Path

    @classmethod
    def from_params(cls, params: Params) -> Locations:
        return cls(Path(params.paths.data), Path(params.paths.store), Path(params.paths.cache))

    def stage(self, name: str) -> Path:
        return self.data / name

    def manifest(self, name: str) -> Path:
        return self.data / name / "manifest.parquet"


# ------------------------------------------------------------------------------ reading


def jsonable(value: Any) -> Any:
    """`value` as JSON types only: NaN/inf -> None, timestamps -> ISO text, numpy/pandas
    scalars -> Python ones (pyarrow's `to_pylist` already gives Python objects; card files and
    the odd numpy value from elsewhere go through here too)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    try:  # pandas.NA / NaT
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _columns(path: Path) -> list[str]:
    return pq.read_schema(path).names


def read_rows(path: Path, key: str, value: str, columns: Iterable[str] | None = None
              ) -> list[Facts] | None:
    """The rows of Parquet file `path` whose `key` equals `value`, as JSON-ready dicts, with
    only `columns` (those present; all when None). None when the file does not exist: the
    stage that writes it has not run."""
    if not path.exists():
        return None
    names = _columns(path)
    if key not in names:
        return []
    wanted = names if columns is None else [c for c in names if c in set(columns) | {key}]
    table = pq.read_table(path, columns=wanted, filters=[(key, "==", value)])
    return [jsonable(row) for row in table.to_pylist()]


def ids_with_prefix(path: Path, column: str, prefix: str) -> set[str]:
    """Distinct values of `column` starting with `prefix` (none when the file is missing)."""
    if not path.exists() or column not in _columns(path):
        return set()
    table = pq.read_table(path, columns=[column],
                          filters=pc.starts_with(pc.field(column), prefix))
    return {v for v in table.column(column).to_pylist() if v}


def resolve(prefix: str, loc: Locations) -> str:
    """The one image id (stored image or rejected input) that starts with `prefix`."""
    wanted = prefix.strip().lower()
    if not HEX.fullmatch(wanted):
        raise UnknownImage(f"{prefix!r} is not an image id: ids are the sha256 of the file, up "
                           "to 64 hex digits (a prefix is enough); find them in the reports or "
                           "the manifests")
    manifest, rejects = loc.manifest("ingest"), loc.stage("ingest") / "rejects.parquet"
    if not manifest.exists() and not rejects.exists():
        raise UnknownImage(f"nothing ingested yet ({manifest} does not exist): run `curate "
                           "ingest` (or `dvc repro`) first, or pass the project's --params")
    found = sorted(ids_with_prefix(manifest, "image_id", wanted)
                   | ids_with_prefix(rejects, "sha256", wanted))
    if not found:
        raise UnknownImage(f"no image id starts with {wanted!r} in {manifest} or {rejects}")
    if len(found) > 1:
        raise AmbiguousImage(wanted, found[:MAX_CANDIDATES], len(found))
    return found[0]


# ------------------------------------------------------------------------------ stages


def _added_columns(loc: Locations, stage: str) -> list[str] | None:
    """Columns `stage`'s manifest adds to its input's (None: read them all, the input is
    missing), so a section shows what that stage decided and reads nothing more."""
    index = CHAIN.index(stage)
    if index == 0:
        return None
    upstream = loc.manifest(CHAIN[index - 1])
    if not upstream.exists():
        return None
    before = set(_columns(upstream))
    return [*ROW_KEYS, *(c for c in _columns(loc.manifest(stage)) if c not in before)]


def stage_row(loc: Locations, stage: str, image_id: str) -> Facts:
    """One chained stage's section: its state, and the image's row (added columns only)."""
    path = loc.manifest(stage)
    if not path.exists():
        return {"state": NOT_RUN, "manifest": str(path)}
    rows = read_rows(path, "image_id", image_id, _added_columns(loc, stage))
    if not rows:
        return {"state": ABSENT, "manifest": str(path)}
    return {"state": PRESENT, "manifest": str(path), **rows[0]}


def ingest_facts(loc: Locations, image_id: str) -> Facts:
    """Where the bytes came from (every source URI with these bytes), or why each input with
    these bytes was refused."""
    section = stage_row(loc, "ingest", image_id)
    rejects_path = loc.stage("ingest") / "rejects.parquet"
    rejects = read_rows(rejects_path, "sha256", image_id,
                        ("source", "source_uri", "reason", "message", "bytes")) or []
    rejects.sort(key=lambda r: (r.get("source_uri") or "", r.get("reason") or ""))
    if section["state"] != PRESENT and rejects:
        section = {"state": PRESENT, "manifest": section["manifest"], "image_id": image_id,
                   "status": Status.REJECTED.value, "reason": rejects[0]["reason"],
                   "source_uris": [r["source_uri"] for r in rejects]}
    section["rejects"] = rejects
    return section


def dedup_facts(loc: Locations, image_id: str) -> Facts:
    """The image's cluster: the kept image, and every member with the link that joined it."""
    section = stage_row(loc, "dedup", image_id)
    cluster = section.get("cluster_id")
    section["kept_image"] = cluster or (image_id if section.get("status") == Status.OK else None)
    members = (read_rows(loc.manifest("dedup"), "cluster_id", cluster, MEMBER_COLUMNS)
               if cluster else None) or []
    section["members"] = sorted(members, key=lambda m: (m["image_id"] != cluster,
                                                        m["image_id"]))
    return section


def tags_facts(loc: Locations, image_id: str) -> Facts:
    """The merged verdict and each annotation (who tagged what, when)."""
    merged_path = loc.stage("tags") / "merged.parquet"
    tags_path = loc.stage("tags") / "tags.parquet"
    merged = read_rows(merged_path, "image_id", image_id)
    annotations = read_rows(tags_path, "image_id", image_id) or []
    if merged is None and not tags_path.exists():
        return {"state": NOT_RUN, "manifest": str(merged_path)}
    if not merged and not annotations:
        return {"state": ABSENT, "manifest": str(merged_path), "annotations": []}
    annotations.sort(key=lambda a: (str(a.get("annotator")), a.get("annotation_id") or 0))
    return {"state": PRESENT, "manifest": str(merged_path),
            "merged": merged[0] if merged else None, "annotations": annotations}


def _cutoffs(loc: Locations, stage: str) -> dict[str, float | None]:
    """The cut-off each check applied in the last run (percentile modes resolved)."""
    path = loc.stage(stage) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("cutoffs", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def check_table(section: Facts, prefix: str, reasons: list[str],
                cutoffs: dict[str, float | None]) -> list[Facts]:
    """Per check the stage ran: the measured value behind it, the cut-off, the bad side, the
    severity score (0..1, 1 = worst of the set) and whether it flagged this image."""
    score_prefix = f"{prefix}score_"
    checks = []
    for column in sorted(c for c in section if c.startswith(score_prefix)):
        name = column[len(score_prefix):]
        check = CHECKS.get(name)
        metric = f"{prefix}{check.metric}" if check else None
        checks.append({"check": name, "metric": metric, "value": section.get(metric),
                       "cutoff": cutoffs.get(name), "bad": check.bad if check else None,
                       "unit": check.unit if check else "", "score": section[column],
                       "flagged": name in reasons})
    return checks


def quality_facts(loc: Locations, image_id: str) -> Facts:
    section = stage_row(loc, "quality", image_id)
    if section["state"] == PRESENT:
        section["checks"] = check_table(section, "q_", section.get("quality_reasons") or [],
                                        _cutoffs(loc, "quality"))
    return section


def matte_facts(loc: Locations, image_id: str) -> Facts:
    section = stage_row(loc, "matte", image_id)
    if section["state"] == PRESENT:
        section["checks"] = check_table(section, "m_", section.get("matte_reasons") or [],
                                        _cutoffs(loc, "matte"))
        for key in ("matte_path", "mask_path"):  # relative to the matte stage's folder
            if section.get(key):
                section[key] = str(loc.stage("matte") / section[key])
    return section


def _card(loc: Locations, name: str) -> Facts | None:
    try:
        return json.loads((loc.stage("datasets") / f"{name}.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _settings_hash(card: Facts | None, class_name: str | None) -> str | None:
    """The settings hash naming the folder of a crop's cached PNG: the dataset's, or in a
    combined dataset its class's (each class is prepared as its own distribution)."""
    if card is None:
        return None
    for entry in card.get("classes") or []:
        if entry.get("name") == class_name:
            return entry.get("settings_hash")
    return None if card.get("classes") else card.get("settings_hash")


def prepared_png(loc: Locations, settings_hash: str, image_id: str, variant: int) -> str:
    """Where the prepare stage cached this crop's PNG, asked of the stage's own cache class
    (imported here: it pulls in OpenCV, which only images that reached a dataset need)."""
    from curate.stages.prepare import PreparedPngs

    return str(PreparedPngs(loc.cache / "prepare", settings_hash).png_path(image_id, variant))


def prepare_facts(loc: Locations, image_id: str) -> Facts:
    """Every dataset the image went into: each crop variant, its PNG and its zip member."""
    root = loc.stage("prepare")
    manifests = sorted(root.glob("*/manifest.parquet")) if root.is_dir() else []
    if not manifests:
        return {"state": NOT_RUN, "manifest": str(root / "NAME" / "manifest.parquet")}
    datasets = []
    for path in manifests:
        rows = read_rows(path, "image_id", image_id)
        if not rows:
            continue
        name = path.parent.name
        card = _card(loc, name)
        zip_path = loc.stage("datasets") / f"{name}.zip"
        for row in rows:
            settings = _settings_hash(card, row.get("class_name"))
            row["png"] = (prepared_png(loc, settings, image_id, row["variant"])
                          if settings and row.get("variant") is not None else None)
            row["zip_member"] = (f"{zip_path}!{row['archive_name']}"
                                 if row.get("archive_name") else None)
        rows.sort(key=lambda r: (r.get("variant") is None, r.get("variant") or 0))
        datasets.append({"name": name, "manifest": str(path), "zip": str(zip_path),
                         "card": str(loc.stage("datasets") / f"{name}.json")
                         if card is not None else None, "rows": rows})
    return {"state": PRESENT if datasets else ABSENT, "manifest": str(root / "*" /
                                                                      "manifest.parquet"),
            "datasets": datasets}


def derived_files(loc: Locations, story: Facts) -> list[Facts]:
    """Every file made from this image, whether it is (still) on disk."""
    files: list[tuple[str, str | None]] = []
    ingest = story["ingest"]
    if ingest.get("store_path"):
        files.append(("original (store)", str(loc.store / ingest["store_path"])))
    matte = story["matte"]
    files += [("matte composite", matte.get("matte_path")), ("matte mask", matte.get("mask_path"))]
    for dataset in story["prepare"].get("datasets", []):
        for row in dataset["rows"]:
            label = f"{dataset['name']} variant {row.get('variant')}"
            files += [(f"prepared PNG ({label})", row.get("png")),
                      (f"zip member ({label})", row.get("zip_member"))]
    return [{"kind": kind, "path": path, "exists": on_disk(path)} for kind, path in files
            if path]


def on_disk(path: str) -> bool:
    """Whether a derived file exists; for `ZIP!MEMBER`, whether the zip holds that member."""
    file, _, member = path.partition("!")
    return member in _zip_members(file) if member else Path(file).exists()


@lru_cache(maxsize=8)
def _zip_members(path: str) -> frozenset[str]:
    """A dataset zip's member names (its central directory, read once per zip)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return frozenset(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return frozenset()


def gather(prefix: str, params: Params) -> Facts:
    """Everything every stage recorded about the image `prefix` names, as JSON types."""
    loc = Locations.from_params(params)
    image_id = resolve(prefix, loc)
    story: Facts = {
        "image_id": image_id,
        "ingest": ingest_facts(loc, image_id),
        "dedup": dedup_facts(loc, image_id),
        "tags": tags_facts(loc, image_id),
        "quality": quality_facts(loc, image_id),
        "matte": matte_facts(loc, image_id),
        "split": stage_row(loc, "split", image_id),
        "prepare": prepare_facts(loc, image_id),
    }
    story["files"] = derived_files(loc, story)
    return jsonable(story)


def to_json(story: Facts) -> str:
    """Stable text: sorted keys, and strict JSON (a NaN left anywhere is an error here)."""
    return json.dumps(story, sort_keys=True, indent=2, allow_nan=False)


# ------------------------------------------------------------------------------ tables


def _text(value: Any) -> str:
    """A value as table text, escaped: a file name or note like "[red]" stays literal."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(_text, value)) or "-"
    return escape(str(value))


def _short(image_id: Any) -> str:
    """An id as tables show it: a prefix `curate show` accepts (JSON has them whole)."""
    return "-" if image_id is None else str(image_id)[:SHORT_ID]


def _status(value: Any) -> str:
    colour = {Status.OK.value: "green", None: "dim"}.get(value, "red")
    return f"[{colour}]{_text(value)}[/]"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _fields(title: str, section: Facts, keys: Iterable[str]) -> Table | None:
    """A field/value table of `keys`; None when none has a value (nothing to say)."""
    rows = [(key, _text(section[key])) for key in keys if key in section]
    if all(section[key] is None for key in keys if key in section):
        return None
    table = _table(title, "field", "value")
    for row in rows:
        table.add_row(*row)
    return table


#: What a stage's missing row means, in the overview.
ABSENT_TEXT = {"tags": "not tagged", "prepare": "in no dataset", "": "no row for this image"}
STAGES = ("ingest", "dedup", "tags", "quality", "matte", "split", "prepare")


def overview(story: Facts) -> Table:
    """One line per stage: did it run, and what did it decide about this image. A status
    carried over from an earlier stage is marked, so the stage that decided stands out."""
    table = _table("stages", "stage", "state", "status", "reason")
    states = {NOT_RUN: "[yellow]not run[/]", PRESENT: "ran"}
    previous = None
    for stage in STAGES:
        section = story[stage]
        status, reason = _decision(stage, section)
        if stage in CHAIN and section["state"] == PRESENT:
            if status != Status.OK and status == previous:
                reason = f"{reason} [dim](carried over)[/]"
            previous = status
            status = _status(status)
        state = states.get(section["state"], f"[dim]{ABSENT_TEXT.get(stage, ABSENT_TEXT[''])}[/]")
        table.add_row(stage, state, status or "-", reason or "-")
    return table


def _decision(stage: str, section: Facts) -> tuple[str | None, str | None]:
    """(status, reason) a stage recorded for the image, as overview text."""
    if section["state"] != PRESENT:
        return None, None
    if stage == "tags":
        merged = section.get("merged") or {}
        return (f"verdict {_text(merged.get('verdict'))}",
                f"{len(section['annotations'])} annotation(s)")
    if stage == "prepare":
        return ("; ".join(f"{_text(d['name'])}: " + ", ".join(sorted({_text(r.get('status'))
                                                                      for r in d["rows"]}))
                          for d in section["datasets"]),
                "; ".join(sorted({_text(r["reason"]) for d in section["datasets"]
                                  for r in d["rows"] if r.get("reason")})) or None)
    if stage == "split" and section.get("dist_source"):
        return section.get("status"), (f"distribution {_text(section.get('distribution'))} "
                                       f"({_text(section['dist_source'])}, confidence "
                                       f"{_text(section.get('dist_confidence'))})")
    reason = section.get("reason")
    return section.get("status"), None if reason is None else _text(reason)


def sources_table(ingest: Facts) -> Table:
    table = _table("sources", "source uri", "outcome", "message")
    rejected = {r["source_uri"]: r for r in ingest.get("rejects", [])}
    for uri in ingest.get("source_uris") or []:
        r = rejected.get(uri)
        outcome = _status(Status.OK) if r is None else f"[red]{_text(r['reason'])}[/]"
        table.add_row(_text(uri), outcome, "-" if r is None else _text(r.get("message")))
    return table


def dedup_table(dedup: Facts) -> Table:
    """The cluster, kept image first: how each copy was linked (kind, distance, the hash bits
    and cosine to the kept image), and on what criterion the kept one won."""
    table = _table(f"dedup cluster of {len(dedup['members'])} (kept image "
                   f"{_short(dedup.get('kept_image'))})", "member", "status", "link",
                   "distance", "hash bits", "cosine", "linked to", "kept because", "transform",
                   "source uri")
    for m in dedup["members"]:
        label = _short(m["image_id"]) + (" [bold](this)[/]" if m["image_id"] == dedup["image_id"]
                                         else "")
        table.add_row(label, _status(m.get("status")), _text(m.get("dup_kind")),
                      _text(m.get("distance")), _text(m.get("hash_distance")),
                      _text(m.get("cosine")), _short(m.get("linked_to")),
                      _text(m.get("kept_because")), _text(m.get("transform")),
                      _text(m.get("source_uri")))
    return table


def checks_table(title: str, checks: list[Facts]) -> Table:
    table = _table(title, "check", "measured", "value", "cut-off", "flagged when", "score",
                   "flagged")
    for c in checks:
        side = {"low": "below", "high": "above"}.get(c["bad"] or "", "-")
        table.add_row(_text(c["check"]), _text(c["metric"]), _text(c["value"]) + (
            f" {_text(c['unit'])}" if c["unit"] and c["value"] is not None else ""),
            _text(c["cutoff"]), side, _text(c["score"]),
            "[red]FLAGGED[/]" if c["flagged"] else "-")
    return table


def tags_tables(tags: Facts) -> list[Table | None]:
    merged = tags.get("merged") or {}
    tables = [_fields("tags (merged)", merged,
                      ("verdict", "category", "reject", "n_annotators", "agreement",
                       "annotators", "votes", "note", "task_id"))]
    annotations = _table("annotations", "annotator", "email", "category", "reject", "note",
                         "updated")
    for a in tags.get("annotations", []):
        annotations.add_row(_text(a.get("annotator")), _text(a.get("annotator_email")),
                            _text(a.get("category")), _text(a.get("reject")),
                            _text(a.get("note")), _text(a.get("updated_at")))
    return [*tables, annotations]


def prepare_table(prepare: Facts) -> Table:
    table = _table("prepare", "dataset", "variant", "status", "zip member", "method",
                   "transform", "prepared PNG")
    for d in prepare.get("datasets", []):
        for r in d["rows"]:
            status = _status(r.get("status"))
            if r.get("reason"):
                status += f" {_text(r['reason'])}: {_text(r.get('message'))}"
            table.add_row(_text(d["name"]), _text(r.get("variant")), status,
                          _text(r.get("archive_name")), _text(r.get("method")),
                          _text(r.get("transform")), _text(r.get("png")))
    return table


def files_table(files: list[Facts]) -> Table:
    table = _table("files", "kind", "path", "on disk")
    for f in files:
        table.add_row(_text(f["kind"]), _text(f["path"]),
                      "yes" if f["exists"] else "[red]missing[/]")
    return table


def sections(story: Facts) -> list[RenderableType]:
    """The story's tables in reading order; a stage with nothing to say adds nothing."""
    ingest, dedup = story["ingest"], story["dedup"]
    out: list[RenderableType | None] = [f"[bold]image {story['image_id']}[/]", overview(story)]
    if ingest["state"] == PRESENT:
        out.append(sources_table(ingest))
    out.append(_fields("ingest", ingest, ("source", "format", "mode", "width", "height",
                                          "bytes", "exif_orientation", "n_frames")))
    if dedup.get("members"):
        out.append(dedup_table(dedup))
    elif dedup["state"] == PRESENT and dedup.get("status") == Status.OK:
        out.append("dedup: no duplicate found; kept")
    if story["tags"]["state"] == PRESENT:
        out += tags_tables(story["tags"])
    for stage in ("quality", "matte"):
        section = story[stage]
        checks = section.get("checks") or []
        if any(c["score"] is not None for c in checks):
            out.append(checks_table(f"{stage} checks", checks))
        elif section["state"] == PRESENT:
            out.append(f"{stage}: not judged (the image was no longer live when it ran)")
        if section.get(f"{stage}_error"):
            out.append(f"[red]{stage} error:[/] {_text(section[f'{stage}_error'])}")
    out.append(_fields("matte", story["matte"], (
        "matte_path", "mask_path", "subject_by", "m_parts_dropped", "m_subject_removed",
        "m_subject_added")))
    out.append(_fields("split", story["split"], (
        "distribution", "dist_source", "dist_confidence", "proposal")))
    if story["prepare"]["state"] == PRESENT:
        out.append(prepare_table(story["prepare"]))
    if story["files"]:
        out.append(files_table(story["files"]))
    return [item for item in out if item is not None]


def render(story: Facts, console: Console | None = None) -> None:
    """Print the story as tables (see `sections`) on stdout. Piped into a file or `less`, the
    tables are 200 columns wide rather than rich's 80, which would fold every id and path."""
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=200)
    for item in sections(story):
        console.print(item)
