"""Tags stage: send images to Label Studio, bring annotators' tags back as data.

- `run_push`: create or update the project from params, register how images are served, and
  import one task per selected image (the image id in the task data). Idempotent: images that
  already have a task are never imported again, so a push killed half-way is simply rerun.
- `run_pull`: export every task with its annotations, normalise in memory, and only then
  write the raw export snapshot (``data/tags/export.json``) and the tables, each atomically;
  any failure leaves the previous snapshot and tables as they were.
- `run_import`: the same normalisation from an export file, no server. This is what
  `dvc repro` runs, on the snapshot named by ``tags.snapshot``.

Outputs in ``out_dir``: ``tags.parquet`` (one row per annotation, pixels), ``merged.parquet``
(one row per image), ``agreement.json`` (DVC metrics: verdict counts, pairwise kappa).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core import atomic
from core.console import StageSummary, console, progress_bar
from core.errors import UserError
from core.manifest import read_table, write_table
from core.stage import StageResult, Status
from curate.config import Params
from curate.tags import agreement, labelconfig, merge, normalise
from curate.tags.client import Connection, LabelStudioClient, LabelStudioError
from curate.tags.config import TagsConfig
from curate.tags.labelconfig import LabelConfigError, TagSchema
from curate.tags.select import SelectionError, select
from curate.tags.serving import ImageUrls, ServingError, image_urls

STORAGE_TITLE = "gan-curate store"


class TagsError(UserError, RuntimeError):
    """A tags command cannot go on; the message says what to fix. Nothing was overwritten."""


@contextlib.contextmanager
def _for_people() -> Iterator[None]:
    """Turn the known failure kinds into one error type the CLI prints without a traceback."""
    try:
        yield
    except (LabelStudioError, LabelConfigError, ServingError, SelectionError,
            FileNotFoundError) as exc:
        raise TagsError(str(exc)) from None


@dataclass(frozen=True)
class TagTables:
    """What pull and import produce, built in memory before anything is written."""

    tags: pd.DataFrame
    merged: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        write_table(self.tags, out_dir / "tags.parquet",
                    sort_by=["image_id", "annotator", "annotation_id"])
        write_table(self.merged, out_dir / "merged.parquet", sort_by=["image_id"])
        atomic.write_text(out_dir / "agreement.json", json.dumps(self.summary, indent=2) + "\n")


def build_tables(export: list[dict[str, Any]], schema: TagSchema, cfg: TagsConfig,
                 sizes: dict[str, tuple[int, int]] | None = None) -> TagTables:
    """Normalise an export, merge per image and summarise agreement (no I/O)."""
    try:
        tags = normalise.normalise(export, schema, sizes)
    except ValueError as exc:
        raise TagsError(str(exc)) from None
    merged = merge.merge(tags, schema, cfg.merge)
    summary = agreement.summarise(tags, merged, schema, normalise.pending_tasks(export))
    return TagTables(tags, merged, summary)


def _parse_export(data: bytes, source: str) -> list[dict[str, Any]]:
    try:
        export = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TagsError(f"{source} is not a complete JSON export ({exc}); if it came from a "
                        "server, the transfer was probably cut: pull again") from None
    if not isinstance(export, list):
        raise TagsError(f"{source} is not a Label Studio JSON export (expected a list of tasks; "
                        "export with the JSON format, not JSON_MIN or CSV)")
    return export


def _finish(tables: TagTables, out_dir: Path, stage: str,
            outputs: dict[str, Path] | None = None) -> StageResult:
    """Write the tables; the result counts the tagged images per verdict."""
    tables.write(out_dir)
    agreement.print_summary(tables.summary)
    console.print(f"tags: wrote {out_dir}/tags.parquet ({len(tables.tags):,} rows), "
                  f"{out_dir}/merged.parquet ({len(tables.merged):,} images), "
                  f"{out_dir}/agreement.json")
    summary = StageSummary(stage)
    for verdict, n in tables.merged["verdict"].value_counts().items():
        summary.count(str(verdict), n=int(n))
    return StageResult(summary, {"tags": out_dir / "tags.parquet",
                                 "merged": out_dir / "merged.parquet",
                                 "agreement": out_dir / "agreement.json", **(outputs or {})},
                       computed=len(tables.merged), details={"agreement": tables.summary})


# ------------------------------------------------------------------- import


def image_sizes(manifest: Path | None) -> dict[str, tuple[int, int]] | None:
    """EXIF-upright (width, height) of every stored image, from the ingest manifest when it
    exists: annotation geometry is checked against it (see `normalise.normalise`)."""
    if manifest is None or not Path(manifest).exists():
        return None
    table = read_table(manifest)[["image_id", "width", "height"]].dropna()
    return {i: (int(w), int(h)) for i, w, h in zip(table.image_id, table.width, table.height)}


def run_import(params: Params, file: Path | None = None,
               out_dir: Path = Path("data/tags"), manifest: Path | None = None) -> StageResult:
    """Normalise an export file (default ``tags.snapshot``) into the tag tables.

    The result counts images per merged verdict; ``details["agreement"]`` is agreement.json.

    With no file and ``tags.snapshot: null`` there are no tags yet, which is a normal state
    (a first run on untagged photos): the tables are written empty, with their columns, and
    every later stage works without tags.
    """
    cfg = params.tags
    with _for_people():
        schema = labelconfig.schema_for(cfg)
    path = file or cfg.snapshot
    if path is None:
        console.print("tags: no snapshot (tags.snapshot is null): writing empty tag tables; "
                      "tag images with `curate tags push` / `curate tags pull`")
        return _finish(build_tables([], schema, cfg), Path(out_dir), "tags import")
    path = Path(path)
    if not path.is_file():
        what = "tags.snapshot points at" if file is None else "there is"
        raise TagsError(f"{what} a missing file ({path}): run `curate tags pull` to make it from "
                        "your Label Studio server, or remove the key (tags.snapshot: null) to "
                        "start without tags")
    with normalise.gc_paused():
        export = _parse_export(path.read_bytes(), str(path))
        console.print(f"tags: importing {path} ({len(export):,} tasks)")
        tables = build_tables(export, schema, cfg, image_sizes(manifest))
    return _finish(tables, Path(out_dir), "tags import")


# --------------------------------------------------------------------- pull


def _connect(cfg: TagsConfig) -> LabelStudioClient:
    client = LabelStudioClient(Connection.from_env(), timeout_s=cfg.timeout_s)
    client.whoami()
    return client


def _existing_project(client: LabelStudioClient, cfg: TagsConfig) -> dict[str, Any]:
    project = client.find_project(cfg.project.title)
    if project is None:
        raise LabelStudioError(
            f"Label Studio at {client.url} has no project titled {cfg.project.title!r}: run "
            "`curate tags push` to create it, or set tags.project.title in params.yaml to the "
            "title of your project")
    return project


def run_pull(params: Params, out_dir: Path = Path("data/tags"),
             snapshot: Path | None = None, manifest: Path | None = None) -> StageResult:
    """Export the project, then write the snapshot and the tag tables (see module docstring).

    The result is `run_import`'s, with the snapshot among the outputs.
    """
    cfg = params.tags
    snapshot = Path(snapshot or cfg.export)
    with _for_people():
        client = _connect(cfg)
        project = _existing_project(client, cfg)
        schema = labelconfig.parse(project["label_config"], cfg.reject_choice)
        console.print(f"tags: exporting project {project['id']} ({project['title']!r}) "
                      f"from {client.url}")
        raw = client.export(project["id"])
    with normalise.gc_paused():
        export = _parse_export(raw, f"the export of project {project['id']} from {client.url}")
        tables = build_tables(export, schema, cfg, image_sizes(manifest))
    atomic.write_bytes(snapshot, raw)
    console.print(f"tags: snapshot {snapshot} ({len(export):,} tasks, {len(raw) / 1e6:.1f} MB)")
    result = _finish(tables, Path(out_dir), "tags pull", {"snapshot": snapshot})
    if cfg.snapshot is None or snapshot.resolve() != Path(cfg.snapshot).resolve():
        console.print(f"[yellow]note:[/] `dvc repro` imports tags.snapshot ({cfg.snapshot}); set "
                      f"it to {snapshot} in params.yaml to build the pipeline on this pull")
    return result


# --------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushOptions:
    """Run-time overrides of ``tags.push`` (the CLI's options)."""

    strategy: str | None = None
    n: int | None = None
    seed: int | None = None
    manifest: Path | None = None
    out_dir: Path = Path("data/tags")


def _ensure_project(client: LabelStudioClient, cfg: TagsConfig, xml: str,
                    events: list[str]) -> int:
    """The id of the project titled as in params, made or updated to match them."""
    project = client.find_project(cfg.project.title)
    wanted = {"description": cfg.project.description,
              "maximum_annotations": cfg.project.annotators_per_task}
    if project is None:
        events.append(f"created project {cfg.project.title!r}")
        return client.create_project(cfg.project.title, label_config=xml, **wanted)
    project_id = int(project["id"])
    changes = {k: v for k, v in wanted.items() if project[k] != v}
    if project["label_config"].strip() != xml.strip():
        changes["label_config"] = xml
    if changes:
        client.update_project(project_id, **changes)
        events.append(f"updated project {cfg.project.title!r}: {', '.join(sorted(changes))}")
    return project_id


def run_push(params: Params, options: PushOptions = PushOptions()) -> StageResult:
    """Create/update the project and import tasks for the selected images.

    ``computed``: tasks created. ``details``: ``project_id``, and ``events``, what changed in
    the project itself (created, updated, storage added).
    """
    cfg = params.tags
    if not cfg.categories:
        raise TagsError("tags.categories is empty, so annotators would have nothing to choose: "
                        "name the categories in params.yaml (e.g. tags.categories: [soles, pov])")
    summary = StageSummary("tags push")
    events: list[str] = []
    strategy = options.strategy or cfg.push.strategy
    n = options.n if options.n is not None else cfg.push.n
    seed = options.seed if options.seed is not None else cfg.push.seed
    with _for_people():
        xml = labelconfig.config_xml(cfg)
        schema = labelconfig.parse(xml, cfg.reject_choice)  # a broken XML fails before any call
        if schema.image_key != labelconfig.IMAGE:
            raise LabelConfigError(f"the labeling config reads the image from ${schema.image_key}"
                                   f"; tasks carry it as ${labelconfig.IMAGE}: use "
                                   f'value="${labelconfig.IMAGE}" in its <Image> tag')
        urls = image_urls(cfg.images, params.paths.store)
        manifest = read_table(Path(options.manifest or cfg.push.manifest))
        live = manifest[manifest["status"] == Status.OK] if "status" in manifest else manifest
        client = _connect(cfg)
        project_id = _ensure_project(client, cfg, xml, events)
        if urls.storage_path and urls.storage_path not in client.local_storages(project_id):
            client.add_local_storage(project_id, urls.storage_path, STORAGE_TITLE)
            events.append(f"added local-files storage {urls.storage_path}")
        existing = {str(d["image_id"]): (tid, d) for tid, d in client.tasks(project_id)
                    if d.get("image_id")}
        store_paths = dict(zip(live["image_id"].astype(str), live["store_path"].astype(str),
                               strict=True))
        repointed = _repoint(client, existing, store_paths, urls)
        candidates, tagged = _candidates(live, set(existing), options.out_dir)
        chosen = select(strategy, candidates, n, seed, params)
        tasks = [{"data": {labelconfig.IMAGE: urls.url(store_paths[i]), "image_id": i}}
                 for i in chosen]
        created = _import(client, project_id, tasks, cfg.push.batch_size)
    if created != len(tasks):
        raise TagsError(f"Label Studio made {created} tasks out of {len(tasks)} sent; run "
                        "`curate tags push` again (it only sends what is missing)")
    summary.count("already in project", n=int(live["image_id"].isin(existing).sum()))
    if repointed:  # a subset of those already in the project
        summary.reasons["image URL re-pointed"] = repointed
    summary.count("new task", n=created)
    summary.count("already tagged", n=tagged)
    summary.count("not selected", n=len(candidates) - len(chosen))
    summary.print()
    for event in events:
        console.print(f"tags push: {event}")
    console.print(f"tags push: {created:,} new tasks ({strategy}) in project {project_id}: "
                  f"{client.url}/projects/{project_id}/data")
    return StageResult(summary, computed=created,
                       details={"project_id": project_id, "events": events})


def _candidates(live: pd.DataFrame, in_project: set[str], out_dir: Path
                ) -> tuple[pd.DataFrame, int]:
    """Live images with no task yet and no tag yet; and how many were skipped as tagged."""
    tags_path = Path(out_dir) / "tags.parquet"
    tagged: set[str] = set()
    if tags_path.exists():
        tags = read_table(tags_path)
        tagged = set(tags.loc[tags["latest"], "image_id"].dropna().astype(str))
    fresh = ~live["image_id"].isin(in_project)
    untagged = ~live["image_id"].isin(tagged)
    return live[fresh & untagged], int((fresh & ~untagged).sum())


def _repoint(client: LabelStudioClient, existing: dict[str, tuple[int, dict[str, Any]]],
             store_paths: dict[str, str], urls: ImageUrls) -> int:
    """Update the image URL of tasks whose serving mode or base changed since their push."""
    stale = [(tid, data, urls.url(store_paths[iid])) for iid, (tid, data) in existing.items()
             if iid in store_paths and data.get(labelconfig.IMAGE) != urls.url(store_paths[iid])]
    if stale:
        with progress_bar("tags push: re-pointing image URLs", total=len(stale)) as advance:
            for tid, data, new_url in stale:
                client.update_task_data(tid, {**data, labelconfig.IMAGE: new_url})
                advance(1)
    return len(stale)


def _import(client: LabelStudioClient, project_id: int, tasks: list[dict[str, Any]],
            batch_size: int) -> int:
    created = 0
    with progress_bar("tags push: importing tasks", total=len(tasks)) as advance:
        for start in range(0, len(tasks), batch_size):
            batch = tasks[start:start + batch_size]
            created += client.import_tasks(project_id, batch)
            advance(len(batch))
    return created
