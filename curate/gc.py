"""`curate gc`: free the per-image state that no current manifest references.

The store, the per-image caches and the matte and prepare outputs only ever grow: images
leave the sources, settings change (a new matte variant, new prepare settings), and what the
old ones made stays. Nothing of that is in DVC's cache (`dvc gc` cannot see it), so this
command judges it against the manifests and dataset cards in the workspace now:

- **store** (`paths.store`): image files no manifest's `store_path` names;
- **matte** (`data/matte/out/`): variant folders neither the matte manifest nor the current
  `matte` settings use (the raw-mask folder the matte summary and the settings name is kept),
  and in the kept variant, the composites, masks and raw masks of images no longer matted;
- **prepare** (`<paths.cache>/prepare/<settings hash>/`): folders of settings no dataset card
  in `data/datasets/` names, and in the kept ones, crops no prepare manifest lists;
- **repost features** (`<paths.cache>/dedup-features/`): the files of images no manifest
  holds (the folders of earlier feature versions are kept, like earlier settings' rows);
- **cache rows** (`<paths.cache>/*.sqlite`): rows keyed by an image id no manifest (or the
  rejects table) holds; rows of matte variants and prepare settings removed above, and
  embeddings of their composites; ingest's records of file versions no longer on disk (a
  queued experiment's temporary copy leaves those). Rows of earlier settings of the other
  per-image operations, scraping records and the subject model are kept. `features.sqlite`,
  where earlier versions kept the repost features, is deleted whole: nothing reads it now.

Safe by construction: it holds the per-image state's lock exclusively (a stage running here
or in a queued experiment sharing this cache makes it refuse, and no stage starts while it
runs). It deletes in an order a kill cannot hurt: cache rows in one transaction per database,
then whole folders renamed away first (a `.gc-trash-` folder a killed run left is removed by
the next), then single files. Every consumer verifies what it reuses (sizes recorded in the
cache, the store checked before a cached record is trusted), so anything deleted is
recomputed when it is needed again: a checkout of an earlier version costs a rerun of what it
needs, never a wrong output. Without a manifest to judge by (no ingest manifest: the pipeline
never ran here, or `dvc pull` has not been run) it deletes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.atomic import TEMP_MARKER
from core.stage import Status
from curate.config import Params

HEX64 = re.compile(r"[0-9a-f]{64}")
TRASH = ".gc-trash-"
#: A matte variant folder: `<model or method>-<10 hex>` (raw masks: `raw-` before it).
VARIANT = re.compile(r"^(raw-)?[A-Za-z0-9_]+-[0-9a-f]{10}$")
#: The tables of the per-image caches: (table, key column, value column).
TABLES = (("results", "key", "value"), ("vectors", "image_id", "vec"))
#: Cache files earlier versions wrote and nothing reads now.
OBSOLETE_CACHE_FILES = ("features.sqlite", "features.sqlite-wal", "features.sqlite-shm")
#: Op families whose rows are kept whatever their key: scraping records (network to redo)
#: and the subject model (one row per settings).
KEPT_FAMILIES = ("ingest.url", "matte.subject_model")
#: Op families keyed by a file version (`resolved path|size|mtime_ns`).
FILE_FAMILIES = ("ingest.file", "ingest.archive")


@dataclass
class Tally:
    """What one kind of thing frees: how many and how many bytes."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int, n: int = 1) -> None:
        self.count += n
        self.bytes += size


@dataclass
class RowDeletes:
    """Rows to delete from one SQLite file."""

    path: Path
    table: str
    key_column: str
    rows: list[tuple[str, str]] = field(default_factory=list)  # (op, key)


@dataclass
class Plan:
    """Everything gc would delete, with what it frees; nothing is deleted to make it."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    rows: list[RowDeletes] = field(default_factory=list)
    tally: dict[str, Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, kind: str, size: int, n: int = 1) -> None:
        self.tally.setdefault(kind, Tally()).add(size, n)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tally.values())


@dataclass(frozen=True)
class References:
    """What the current manifests and cards reference."""

    images: frozenset[str]  # image ids of every manifest, and the rejects' sha256
    store_paths: frozenset[str]  # store-relative paths of stored images
    matte_variants: frozenset[str]  # folder names under data/matte/out/ to keep
    matted: frozenset[str] | None  # image ids with a composite in the manifest's variant
    pruned_variants: frozenset[str]  # the manifest's variant and its run's raw masks
    prepare: dict[str, set[tuple[str, int]]] | None  # settings hash -> (image id, variant)


# ---------------------------------------------------------------------------- references


def _read(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """Those of `columns` a manifest has, or None when there is no such file."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()


def _manifests(data: Path) -> Iterator[Path]:
    yield from sorted(data.glob("*/manifest.parquet"))
    yield from sorted(data.glob("prepare/*/manifest.parquet"))


def _matte_references(params: Params, data: Path
                      ) -> tuple[frozenset[str], frozenset[str] | None, frozenset[str]]:
    """(variant folders to keep, images matted in the manifest's variant, the folders of the
    manifest's run: its variant and raw masks, where images no longer matted are pruned).

    The folders the current settings would write are kept whole: a run with them may not
    have finished yet."""
    from curate.stages.matte import current_variant

    keep = set(current_variant(params)) - {None}
    table = _read(data / "matte" / "manifest.parquet", ["image_id", "matte_path"])
    if table is None:
        return frozenset(keep), None, frozenset()
    matted = table.dropna(subset=["matte_path"])
    ran = {str(p).split("/")[1] for p in matted.matte_path if str(p).startswith("out/")}
    summary = data / "matte" / "summary.json"
    if summary.exists():
        saved = json.loads(summary.read_text(encoding="utf-8"))
        if saved.get("variant") in ran and saved.get("raw_variant"):
            ran.add(saved["raw_variant"])
    return frozenset(keep | ran), frozenset(matted.image_id), frozenset(ran)


def _prepare_references(data: Path) -> dict[str, set[tuple[str, int]]] | None:
    """settings hash -> the (image id, variant) crops its datasets hold; None without cards."""
    cards = sorted((data / "datasets").glob("*.json"))
    if not cards:
        return None
    held: dict[str, set[tuple[str, int]]] = {}
    for card_path in cards:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(card, dict) or "settings_hash" not in card:
            continue
        by_class = {c["name"]: c["settings_hash"] for c in card.get("classes", [])}
        for h in by_class.values() or [card["settings_hash"]]:
            held.setdefault(h, set())
        table = _read(data / "prepare" / card["name"] / "manifest.parquet",
                      ["image_id", "variant", "status", "class_name"])
        if table is None:
            continue
        for row in table[table.status == Status.OK].itertuples():
            h = by_class.get(getattr(row, "class_name", None), card["settings_hash"])
            held.setdefault(h, set()).add((str(row.image_id), int(row.variant)))
    return held


def references(params: Params) -> References | None:
    """What the workspace's manifests reference; None without an ingest manifest."""
    data = Path(params.paths.data)
    ingest = _read(data / "ingest" / "manifest.parquet", ["image_id", "store_path"])
    if ingest is None:
        return None
    images = set(ingest.image_id)
    for path in _manifests(data):
        table = _read(path, ["image_id"])
        if table is not None and "image_id" in table:
            images |= set(table.image_id.astype(str))
    rejects = _read(data / "ingest" / "rejects.parquet", ["sha256"])
    if rejects is not None and "sha256" in rejects:
        images |= set(rejects.sha256.dropna().astype(str))
    variants, matted, in_manifest = _matte_references(params, data)
    return References(frozenset(images), frozenset(ingest.store_path.astype(str)), variants,
                      matted, in_manifest, _prepare_references(data))


# ---------------------------------------------------------------------------- planning


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _tree_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under `folder`."""
    files = size = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            files += 1
            size += _size(Path(dirpath) / name)
    return files, size


def _files(folder: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(folder):
        for name in names:
            yield Path(dirpath) / name


def _plan_store(plan: Plan, store: Path, refs: References) -> None:
    if not store.is_dir():
        return
    for path in _files(store):
        rel = path.relative_to(store).as_posix()
        if rel.startswith(".tmp/") or rel not in refs.store_paths:
            plan.files.append(path)
            plan.count("store: images no manifest names", _size(path))


def _plan_whole(plan: Plan, folder: Path, kind: str) -> None:
    files, size = _tree_size(folder)
    plan.folders.append(folder)
    plan.count(kind, size, files)


def _image_id(name: str) -> str | None:
    found = HEX64.search(name)
    return found.group(0) if found else None


def _plan_matte(plan: Plan, out: Path, refs: References) -> None:
    if not out.is_dir() or refs.matted is None:
        return
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        if folder.name.startswith(TRASH):
            _plan_whole(plan, folder, "left by a killed gc")
        elif folder.name not in refs.matte_variants:
            _plan_whole(plan, folder, "matte: variants of earlier settings")
        elif folder.name in refs.pruned_variants:
            for path in _files(folder):
                image_id = _image_id(path.name)
                if TEMP_MARKER in path.name or (image_id and image_id not in refs.matted):
                    plan.files.append(path)
                    plan.count("matte: images no longer matted", _size(path))


def _plan_prepare(plan: Plan, root: Path, refs: References) -> None:
    if not root.is_dir() or refs.prepare is None:
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        held = refs.prepare.get(folder.name)
        if folder.name.startswith(TRASH):
            _plan_whole(plan, folder, "left by a killed gc")
        elif held is None:
            _plan_whole(plan, folder, "prepare: crops of earlier settings")
        else:
            for path in _files(folder):
                stem, _, variant = path.stem.rpartition("-")
                if TEMP_MARKER in path.name or not variant.isdigit() \
                        or (stem, int(variant)) not in held:
                    plan.files.append(path)
                    plan.count("prepare: crops no dataset holds", _size(path))


def _plan_features(plan: Plan, root: Path, refs: References) -> None:
    """Feature files of images no manifest holds, and writes a killed run left."""
    if not root.is_dir():
        return
    for path in _files(root):
        image_id = _image_id(path.name)
        if TEMP_MARKER in path.name or image_id is None or image_id not in refs.images:
            plan.files.append(path)
            plan.count("dedup: repost features of images no manifest holds", _size(path))


def _plan_obsolete(plan: Plan, cache: Path) -> None:
    for name in OBSOLETE_CACHE_FILES:
        if (cache / name).exists():
            plan.files.append(cache / name)
            plan.count("cache files of earlier versions, read by nothing now", _size(cache / name))


def _file_version_gone(key: str) -> bool:
    """A `path|size|mtime_ns` key whose file is gone or changed: it can never be hit again."""
    path, _, rest = key.rpartition("|")
    path, _, size = path.rpartition("|")
    try:
        st = os.lstat(path)
    except OSError:
        return True
    return f"{st.st_size}|{st.st_mtime_ns}" != f"{size}|{rest}"


class _RowJudge:
    """Which cache rows no current manifest needs (see the module docstring)."""

    def __init__(self, refs: References) -> None:
        from curate.stages.prepare import prepared_op

        self.refs = refs
        self.variants = {v.rsplit("-", 1)[-1] for v in refs.matte_variants}
        self.prepare_ops = (None if refs.prepare is None
                            else {prepared_op(h) for h in refs.prepare})

    def stale(self, op: str, key: str) -> str | None:
        """Why the row is not needed, or None to keep it."""
        family = op.split(":", 1)[0]
        if family in KEPT_FAMILIES:
            return None
        if family in FILE_FAMILIES:
            return "ingest records of files gone" if _file_version_gone(key) else None
        if family == "prepare.image" and self.prepare_ops is not None \
                and op not in self.prepare_ops:
            return "prepare: crops of earlier settings"
        if family == "matte" and self.refs.matted is not None \
                and op.rsplit(":", 1)[-1][:10] not in self.variants:
            return "matte: variants of earlier settings"
        prefix, slash, _ = key.partition("/")
        if slash and VARIANT.match(prefix) and self.refs.matted is not None \
                and prefix not in self.refs.matte_variants:
            return "matte: variants of earlier settings"
        ids = HEX64.findall(key)
        if ids and any(i not in self.refs.images for i in ids):
            return "cache rows of images no manifest holds"
        return None


def _plan_rows(plan: Plan, cache: Path, refs: References) -> None:
    judge = _RowJudge(refs)
    for path in sorted(p for p in cache.glob("*.sqlite") if p.name not in OBSOLETE_CACHE_FILES):
        db = sqlite3.connect(path, timeout=60)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, key, value in TABLES:
                if table not in tables:
                    continue
                deletes = RowDeletes(path, table, key)
                for op, k, size in db.execute(
                        f"SELECT op, {key}, length(op) + length({key}) + length({value}) "
                        f"FROM {table}"):
                    why = judge.stale(op, k)
                    if why is not None:
                        deletes.rows.append((op, k))
                        plan.count(f"{why} ({path.name})" if why.startswith("cache") else why,
                                   int(size))
                if deletes.rows:
                    plan.rows.append(deletes)
        finally:
            db.close()


def plan_gc(params: Params) -> Plan:
    """What gc would delete in this workspace (reads only)."""
    from curate.dedup.reposts import FEATURES_SUBDIR
    from curate.stages.matte import OUT_SUBDIR
    from curate.stages.prepare import PREPARED_SUBDIR

    matte_out = Path(params.paths.data) / "matte" / OUT_SUBDIR
    plan = Plan()
    refs = references(params)
    if refs is None:
        plan.notes.append(f"nothing judged: no {Path(params.paths.data) / 'ingest'}"
                          "/manifest.parquet to judge by (run `dvc repro`, or `dvc pull`)")
        return plan
    _plan_store(plan, Path(params.paths.store), refs)
    if refs.matted is None:
        plan.notes.append("matte outputs kept: no matte manifest to judge by")
    _plan_matte(plan, matte_out, refs)
    if refs.prepare is None:
        plan.notes.append("prepare crops kept: no dataset card in data/datasets/")
    _plan_prepare(plan, Path(params.paths.cache) / PREPARED_SUBDIR, refs)
    _plan_features(plan, Path(params.paths.cache) / FEATURES_SUBDIR, refs)
    _plan_obsolete(plan, Path(params.paths.cache))
    _plan_rows(plan, Path(params.paths.cache), refs)
    return plan


# ---------------------------------------------------------------------------- deleting


def _db_size(path: Path) -> int:
    return sum(_size(Path(f"{path}{s}")) for s in ("", "-wal", "-shm"))


def _delete_rows(deletes: Iterable[RowDeletes]) -> int:
    """Delete the rows (one transaction per table: all or nothing), then compact each file.

    Returns the bytes the files shrank by."""
    freed = 0
    by_file: dict[Path, list[RowDeletes]] = {}
    for d in deletes:
        by_file.setdefault(d.path, []).append(d)
    for path, parts in by_file.items():
        before = _db_size(path)
        db = sqlite3.connect(path, timeout=60)
        try:
            for d in parts:
                with db:
                    db.executemany(f"DELETE FROM {d.table} WHERE op = ? AND {d.key_column} = ?",
                                   d.rows)
            db.execute("VACUUM")  # atomic: a kill leaves the old file, rows already deleted
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        freed += max(0, before - _db_size(path))
    return freed


def _remove_folder(folder: Path) -> None:
    """Rename away first (atomic: the folder is gone for every reader at once), then delete;
    a kill in between leaves a `.gc-trash-` folder the next gc removes."""
    if folder.name.startswith(TRASH):
        trash = folder
    else:
        trash = folder.with_name(f"{TRASH}{folder.name}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(folder, trash)
    shutil.rmtree(trash)


def apply(plan: Plan) -> int:
    """Delete what `plan` lists, cache rows first, then folders, then files; return the bytes
    freed (files as planned, databases as measured)."""
    freed = _delete_rows(plan.rows)
    for folder in plan.folders:
        if folder.exists():
            freed += _tree_size(folder)[1]
            _remove_folder(folder)
    for path in plan.files:
        size = _size(path)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        freed += size
    return freed


def human(size: float) -> str:
    """Bytes for people: 950 B, 12.3 KB, 4.5 MB, 1.2 GB."""
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
