"""Ingest stage: folders, archives and URL lists into the content-addressed store.

Reader / worker / writer, as in img2dataset: this module enumerates inputs and
owns the cache and the output tables; `curate.ingest.worker` hashes, validates
and stores bytes in worker processes, and `curate.ingest.scrape_worker` fetches URLs
there too (with `curate.ingest.scrape`), so image bytes never pass through the coordinator.

Incremental by construction: a local file is recognised by (path, size, mtime)
and an archive likewise, a URL by itself, a content hash by its probe result;
anything found in the cache (and still in the store) is not read again. The
manifest is rebuilt from all records at the end, so a run killed at any point
and rerun produces the same tables.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from core.cache import BatchWriter, ResultCache, op_key
from core.console import StageSummary, console, progress_bar
from core.imagemap import map_items
from core.manifest import REJECT_COLUMNS, write_table
from core.parallel import make_executor
from core.stage import StageResult, Status
from core.store import Store
from curate.config import Params
from curate.ingest.config import IngestConfig, SourceConfig
from curate.ingest.local import ArchiveLimits, is_archive, iter_archive, walk_folder
from curate.ingest.scrape_worker import (
    UrlOutcome,
    close_clients,
    fetch_urls,
    share_of_limits,
)
from curate.ingest.urls import read_url_list
from curate.ingest.worker import Limits, Record, accept, reject

FILE_OP = op_key("ingest.file", 1)
#: Reasons not cached: the input is tried again on the next run (a crash may be transient).
RETRIED = ("internal_error", "worker_crash")
#: One local file's hash + probe + store on one core (a few ms for a typical JPEG): sizes the
#: work to decide whether starting worker processes pays (`make_executor`).
FILE_TASK_S = 0.004


@dataclass(frozen=True)
class IngestOptions:
    """Run-time choices that are not part of params.yaml."""

    out_dir: Path = Path("data/ingest")
    workers: int | None = None
    retry_failed: bool = False


def _stat_key(path: Path, st: os.stat_result) -> str:
    """Identity of a local file's version: resolved path, size and modification time."""
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _archive_key(path: Path) -> str:
    return _stat_key(path.resolve(), path.stat())


def _uri(source: SourceConfig, rel: str) -> str:
    return f"{source.path.as_posix().rstrip('/')}/{rel}"


class IngestRun:
    """State of one ingest run: cache, store, records and the summary."""

    def __init__(self, params: Params, options: IngestOptions) -> None:
        cfg: IngestConfig = params.ingest
        self.cfg = cfg
        self.options = options
        self.store = Store(params.paths.store)
        self.limits = Limits(params.paths.store, cfg.max_file_bytes, cfg.max_pixels)
        limits_key = {"max_bytes": cfg.max_file_bytes, "max_pixels": cfg.max_pixels}
        self.probe_op = op_key("ingest.probe", 1, limits_key)
        arc = cfg.archive
        self.archive_limits = ArchiveLimits(
            cfg.max_file_bytes, arc.max_members, int(arc.max_total_mb * 1024 * 1024),
            arc.max_ratio, arc.max_name_length)
        self.archive_op = op_key("ingest.archive", 2, {
            **limits_key, "archive": dataclasses.asdict(self.archive_limits)})
        self.url_op = op_key("ingest.url", 1, limits_key)
        self.cache = ResultCache(params.paths.cache / "cache.sqlite")
        self.writer = BatchWriter(self.cache)
        self.records: list[Record] = []
        self.summary = StageSummary("ingest")
        self.workers = options.workers or params.n_workers

    # ----------------------------------------------------------- records

    def _add(self, record: Record, source_index: int, cached: bool = False) -> None:
        record = {**record, "source_index": source_index}
        self.records.append(record)
        if cached:
            self.summary.cached += 1

    def _remember_probe(self, record: Record) -> None:
        """Cache what the content hash decided, accepted or not."""
        if record.get("image_id"):
            self.writer.put(self.probe_op, record["image_id"],
                            {"info": record["info"], "bytes": record["bytes"]})
        elif record.get("sha256"):
            self.writer.put(self.probe_op, record["sha256"], {
                "reason": record["reason"], "message": record["message"], "bytes": record["bytes"]})

    def _resolve(self, sha: str, source: str, uri: str, probes: dict[str, Any]) -> Record | None:
        """A record from the probe cache, or None when it must be recomputed."""
        hit = probes.get(sha)
        if hit is None:
            return None
        if "info" in hit:
            if not self.store.has(sha, hit["info"]["ext"], hit["bytes"]):
                return None
            return {"source": source, "source_uri": uri, "image_id": sha,
                    "bytes": hit["bytes"], "info": hit["info"]}
        return reject(source, uri, hit["reason"], hit["message"], bytes=hit["bytes"], sha256=sha)

    # ------------------------------------------------------------ folders

    def _plan_folder(self, source: SourceConfig, index: int, advance: Callable[[int], None]
                     ) -> tuple[list[tuple[Path, str, str, Limits]], list[tuple[Path, str]]]:
        """(work for files the cache does not settle, archives to expand); records the rest."""
        files = list(walk_folder(source.path, source.include, source.exclude))
        plain = [f for f in files if not (source.expand_archives and is_archive(f[0]))]
        archives = [(path, _uri(source, rel)) for path, rel, _ in files
                    if source.expand_archives and is_archive(path)]
        keys = {path: _stat_key(path, st) for path, _, st in plain}
        known = self.cache.get_many(FILE_OP, keys.values())
        probes = self.cache.get_many(self.probe_op, {v["sha256"] for v in known.values()})
        work = []
        for path, rel, st in plain:
            uri = _uri(source, rel)
            hit = known.get(keys[path])
            record = hit and self._resolve(hit["sha256"], "folder", uri, probes)
            if record:
                self._add(record, index, cached=True)
                advance(1)
            elif st.st_size > self.cfg.max_file_bytes:
                self._add(reject("folder", uri, "too_large",
                                 f"{st.st_size:,} bytes, above ingest.max_file_mb "
                                 f"({self.cfg.max_file_bytes:,} bytes)"), index)
                advance(1)
            else:
                self._file_keys[path] = keys[path]
                work.append((path, "folder", uri, self.limits))
        return work, archives

    def _archive_tasks(self, path: Path, uri: str, index: int, advance: Callable[[int], None]
                       ) -> Iterator[tuple[bytes, str, str, Limits]]:
        key = _archive_key(path)
        members = self.cache.get(self.archive_op, key)
        if members is not None:
            hashes = {m["sha256"] for m in members if "sha256" in m}
            probes = self.cache.get_many(self.probe_op, hashes)
            resolved = [
                self._resolve(m["sha256"], "archive", f"{uri}!{m['name']}", probes)
                if "sha256" in m
                else reject("archive", f"{uri}!{m['name']}", m["reason"], m["message"])
                for m in members
            ]
            if all(resolved):
                for record in resolved:
                    self._add(record, index, cached=True)
                advance(len(resolved))
                return
        outcome: list[dict[str, Any]] = []
        for member in iter_archive(path, self.archive_limits):
            member_uri = f"{uri}!{member.name}"
            if member.data is None:
                self._add(reject("archive", member_uri, member.reason or "unreadable",
                                 member.message or ""), index)
                outcome.append({"name": member.name, "reason": member.reason,
                                "message": member.message})
                advance(1)
            else:
                outcome.append({"name": member.name, "pending_uri": member_uri})
                yield member.data, "archive", member_uri, self.limits
        self._pending_archives.append((key, outcome))

    # ----------------------------------------------------------- local run

    def ingest_local(self, sources: list[tuple[int, SourceConfig]]) -> None:
        """Folders and archives through the process pool, streaming."""
        self._pending_archives: list[tuple[str, list[dict[str, Any]]]] = []
        self._file_keys: dict[Path, str] = {}  # stat key of each file sent to a worker
        member_results: dict[str, Record] = {}
        with progress_bar("ingest local files") as advance:
            plans = []
            for index, source in sources:
                if not source.path.exists():
                    console.print(f"[yellow]warning:[/] source {source.path} does not exist; "
                                  "skipped (check ingest.sources in params.yaml)")
                elif source.kind == "folder":
                    plans.append((index, *self._plan_folder(source, index, advance)))
                else:
                    plans.append((index, [], [(source.path, source.path.as_posix())]))
            new_archives = any(self.cache.get(self.archive_op, _archive_key(path)) is None
                               for _, _, archives in plans for path, _ in archives)
            files = sum(len(work) for _, work, _ in plans)
            executor = make_executor(self.workers,
                                     None if new_archives else files * FILE_TASK_S)
            try:
                for index, work, archives in plans:
                    tasks = itertools.chain(work, *(
                        self._archive_tasks(path, uri, index, advance) for path, uri in archives))
                    for outcome in map_items(accept, tasks, workers=self.workers, batch=4,
                                             executor=executor, advance=advance):
                        task = outcome.item
                        record = outcome.value if outcome.failure is None else reject(
                            task[1], task[2], outcome.failure.reason, outcome.failure.describe())
                        self._record_local(task, record, index, member_results)
                    self._close_archives(member_results)
            finally:
                self.writer.flush()
                executor.shutdown(cancel_futures=True)

    def _record_local(self, task: tuple[Path | bytes, str, str, Limits], record: Record,
                      index: int, member_results: dict[str, Record]) -> None:
        self._add(record, index)
        self._remember_probe(record)
        file_key = self._file_keys.pop(task[0], None) if isinstance(task[0], Path) else None
        sha = record.get("image_id") or record.get("sha256")
        if file_key and record.get("bytes") is not None and sha:
            self.writer.put(FILE_OP, file_key, {"sha256": sha})
        if task[1] == "archive":
            member_results[task[2]] = record

    def _close_archives(self, member_results: dict[str, Record]) -> None:
        """Cache each archive's member outcomes once every member has a result."""
        for key, outcome in self._pending_archives:
            entries = []
            for entry in outcome:
                uri = entry.pop("pending_uri", None)
                if uri is None:
                    entries.append(entry)
                    continue
                record = member_results.get(uri)
                if record is None or record.get("reason") in RETRIED:  # interrupted or crashed:
                    break  # not cached, so the next run reads the archive again
                sha = record.get("image_id") or record.get("sha256")
                entries.append({"name": entry["name"], "sha256": sha} if sha else {
                    "name": entry["name"], "reason": record["reason"],
                    "message": record["message"]})
            else:
                self.writer.put(self.archive_op, key, entries)
        self._pending_archives.clear()

    # --------------------------------------------------------------- URLs

    def ingest_urls(self, sources: list[tuple[int, SourceConfig]]) -> None:
        """Fetch the URLs not settled by the cache (all failed ones with --retry-failed)."""
        todo: list[tuple[int, str]] = []
        seen: set[str] = set()  # a URL listed twice (in one list or two) is fetched once
        for index, source in sources:
            urls = [u for u in dict.fromkeys(read_url_list(source.path, source.url_column))
                    if u not in seen]
            seen.update(urls)
            known = self.cache.get_many(self.url_op, urls)
            probes = self.cache.get_many(self.probe_op, {v["sha256"] for v in known.values()
                                                         if "sha256" in v})
            for url in urls:
                hit = known.get(url)
                record = None
                if hit is not None and "sha256" in hit:
                    record = self._resolve(hit["sha256"], "url", url, probes)
                    if record and record.get("reason") and self.options.retry_failed:
                        record = None
                elif hit is not None and not self.options.retry_failed:
                    record = reject("url", url, hit["reason"], hit["message"])
                if record:
                    self._add(record, index, cached=True)
                else:
                    todo.append((index, url))
        if todo:
            self._scrape(todo)

    def _scrape(self, todo: list[tuple[int, str]]) -> None:
        """Fetch URL batches in worker processes (see `scrape_worker`); record as they finish.

        Twice as many processes as workers: a batch waits for its slowest URL, and while one
        process waits on a slow host the others keep the cores busy.
        """
        processes = 1 if self.workers == 1 else 2 * self.workers
        share = share_of_limits(self.cfg.scrape, processes)
        source_of = {url: index for index, url in todo}
        fetch = partial(fetch_urls, scrape=share, limits=self.limits)
        try:
            for outcome in map_items(fetch, [url for _, url in todo], workers=processes,
                                     batch=2 * share.concurrency, batched=True,
                                     description="fetch URLs"):
                url, failure = outcome.item, outcome.failure
                result = outcome.value if failure is None else UrlOutcome(
                    reject("url", url, failure.reason, failure.describe()), True)
                self._record_url(result, source_of[url])
        finally:
            self.writer.flush()
            close_clients()

    def _record_url(self, outcome: UrlOutcome, index: int) -> None:
        record, url = outcome.record, outcome.record["source_uri"]
        if outcome.fetch_failed:
            if record["reason"] not in RETRIED:  # a crash is retried on the next run
                self.writer.put(self.url_op, url, {"reason": record["reason"],
                                                   "message": record["message"]})
        else:
            self._remember_probe(record)
            sha = record.get("image_id") or record.get("sha256")
            if sha:
                self.writer.put(self.url_op, url, {"sha256": sha})
        self._add(record, index)

    # ------------------------------------------------------------- output

    def write_outputs(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Build the manifest (one row per image id) and the rejects table, atomically."""
        images: dict[str, dict[str, Any]] = {}
        rejects: list[dict[str, Any]] = []
        ordered = sorted(self.records, key=lambda r: (r["source_index"], r["source_uri"]))
        for record in ordered:
            image_id = record.get("image_id")
            if image_id is None:
                rejects.append({
                    "source": record["source"], "source_uri": record["source_uri"],
                    "reason": record["reason"], "message": record["message"],
                    "bytes": record.get("bytes"), "sha256": record.get("sha256"),
                })
                self.summary.count("rejected", record["reason"])
                continue
            row = images.get(image_id)
            if row is not None:
                row["source_uris"].append(record["source_uri"])
                self.summary.count("exact_duplicate")
                continue
            info = record["info"]
            images[image_id] = {
                "image_id": image_id,
                "source": record["source"],
                "source_uri": record["source_uri"],
                "width": info["width"], "height": info["height"],
                "format": info["format"], "mode": info["mode"],
                "bytes": record["bytes"],
                "ext": info["ext"],
                "store_path": self.store.relpath(image_id, info["ext"]),
                "exif_orientation": info["exif_orientation"],
                "n_frames": info["n_frames"],
                "source_uris": [record["source_uri"]],
                "status": Status.OK.value,
                "reason": None,
            }
            self.summary.count("stored")
        manifest = pd.DataFrame(list(images.values()), columns=MANIFEST_COLUMNS)
        manifest["n_sources"] = manifest["source_uris"].map(len).astype("int64")
        rejects_df = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))
        out = self.options.out_dir
        write_table(manifest, out / "manifest.parquet", sort_by=["image_id"])
        write_table(rejects_df.astype({"bytes": "Int64"}), out / "rejects.parquet",
                    sort_by=["source_uri", "reason"])
        self.summary.save(out / "summary.json")
        return manifest, rejects_df


MANIFEST_COLUMNS = [
    "image_id", "source", "source_uri", "width", "height", "format", "mode", "bytes",
    "ext", "store_path", "exif_orientation", "n_frames", "source_uris", "status", "reason",
]


def run_ingest(params: Params, options: IngestOptions = IngestOptions()) -> StageResult:
    """Ingest every source in params.ingest.sources; write manifest, rejects and summary.

    ``computed``: inputs read, hashed and probed in this run (the rest came from the cache).
    """
    run = IngestRun(params, options)
    swept = run.store.sweep()
    if swept:
        console.print(f"removed {swept} temporary files left by an interrupted run")
    indexed = list(enumerate(params.ingest.sources))
    try:
        run.ingest_local([(i, s) for i, s in indexed if s.kind != "urls"])
        run.ingest_urls([(i, s) for i, s in indexed if s.kind == "urls"])
        manifest, rejects = run.write_outputs()
    finally:
        run.cache.close()
    run.summary.print()
    console.print(f"ingest: {len(manifest):,} unique images in {params.paths.store}, "
                  f"{len(rejects):,} rejects -> {options.out_dir}/rejects.parquet")
    out = options.out_dir
    return StageResult(run.summary, {"manifest": out / "manifest.parquet",
                                     "rejects": out / "rejects.parquet",
                                     "summary": out / "summary.json"},
                       computed=len(run.records) - run.summary.cached)
