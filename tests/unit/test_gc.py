"""`curate gc` on a synthetic workspace: it frees exactly what no manifest references, says how
much first (--dry-run), refuses under a running stage, and a run stopped at any deletion leaves
every referenced file and row, and the next run ends where an uninterrupted one would."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.cache import ResultCache
from core.runlock import shared
from core.store import Store
from curate import gc
from curate.cli import app
from curate.config import Params, PathsConfig
from curate.embeddings import EmbeddingCache
from curate.matte.backends import backend_class
from curate.stages.matte import current_variant, variant_key
from curate.stages.prepare import prepared_op


def _id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


KEPT = [_id(f"kept{i}") for i in range(4)]  # in the manifests, matted, in the dataset
OUTLIER = _id("outlier")  # still ingested, but no longer matted (flagged since)
GONE = _id("gone")  # its source was removed: no manifest names it
REJECT = _id("reject")  # a file ingest rejected: only its probe row exists
OLD_VARIANT = "u2netp-0123456789"
H_NOW, H_OLD = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def current_matte_op(params: Params) -> str:
    """The matte cache op of the current settings."""
    return variant_key(params, backend_class(params.matte).settings(params.matte))[0]


@dataclass
class Workspace:
    root: Path
    params: Params
    matte_out: Path
    variant: str
    raw: str


def _put(path: Path, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rel(image_id: str) -> str:
    return Store(Path()).relpath(image_id, "png")


def make_workspace(root: Path) -> Workspace:
    """Manifests, cards, the store, matte and prepare outputs and every cache, each holding
    something referenced and something stale."""
    params = Params(paths=PathsConfig(data=root / "data", store=root / "data/store",
                                      cache=root / ".cache/curate"))
    data, cache = root / "data", root / ".cache/curate"
    store = Store(params.paths.store)
    for i in [*KEPT, OUTLIER, GONE]:
        _put(store.path(i, "jpg"), i.encode())
    _put(store.tmp_dir / ".x.jpg.tmp-123")  # left by a killed ingest
    ingested = [*KEPT, OUTLIER]
    for stage in ("ingest", "dedup", "quality"):
        (data / stage).mkdir(parents=True)
        pd.DataFrame({"image_id": ingested, "store_path": [store.relpath(i, "jpg")
                                                           for i in ingested]}
                     ).to_parquet(data / stage / "manifest.parquet")
    pd.DataFrame({"sha256": [REJECT, None], "source_uri": ["a", "b"]}).to_parquet(
        data / "ingest" / "rejects.parquet")

    variant, raw = current_variant(params)
    out = data / "matte" / "out"
    (data / "matte").mkdir()
    pd.DataFrame({"image_id": ingested,
                  "matte_path": [f"out/{variant}/images/{_rel(i)}" for i in KEPT] + [None]}
                 ).to_parquet(data / "matte" / "manifest.parquet")
    (data / "matte" / "summary.json").write_text(json.dumps({"variant": variant,
                                                             "raw_variant": raw}))
    for i in [*KEPT, OUTLIER]:
        for part in ("images", "masks"):
            _put(out / variant / part / _rel(i))
        _put(out / raw / _rel(i))
    _put(out / OLD_VARIANT / "images" / _rel(KEPT[0]))

    (data / "datasets").mkdir()
    (data / "datasets" / "soles.json").write_text(json.dumps({"name": "soles",
                                                              "settings_hash": H_NOW}))
    (data / "prepare" / "soles").mkdir(parents=True)
    pd.DataFrame({"image_id": [*KEPT, OUTLIER], "variant": [0] * 5,
                  "status": ["ok"] * 4 + ["excluded"]}).to_parquet(
        data / "prepare" / "soles" / "manifest.parquet")
    for i in [*KEPT, OUTLIER]:
        _put(cache / "prepare" / H_NOW / i[:2] / f"{i}-0.png")
    _put(cache / "prepare" / H_OLD / KEPT[0][:2] / f"{KEPT[0]}-0.png")

    source = _put(root / "photos" / "a.jpg")
    os.utime(source, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))  # same in every copy
    st = source.stat()
    with ResultCache(cache / "cache.sqlite") as db:
        db.put_many("quality.measure:v2:x", [(i, {"v": 1}) for i in [*KEPT, OUTLIER, GONE]])
        db.put_many("ingest.probe:v1:x", [(i, {"v": 1}) for i in [*KEPT, REJECT, GONE]])
        db.put_many("dedup.verify:v1:x", [(f"{KEPT[0]}|{KEPT[1]}", 1), (f"{KEPT[0]}|{GONE}", 1)])
        db.put_many("ingest.file:v1", [(f"{source}|{st.st_size}|{st.st_mtime_ns}", 1),
                                       (f"{root}/tmp/exp/a.jpg|100|1", 1)])
        db.put_many("ingest.url:v1:x", [(f"http://example.com/{GONE}.jpg", 1)])
        db.put_many("matte.subject_model:v2:x", [("model", 1)])
        db.put_many(current_matte_op(params), [(i, 1) for i in KEPT])
        db.put_many(f"matte:v3:{OLD_VARIANT[-10:]}abcdef", [(i, 1) for i in KEPT])
    with ResultCache(cache / "results.sqlite") as db:
        db.put_many(prepared_op(H_NOW), [(i, 1) for i in KEPT])
        db.put_many(prepared_op(H_OLD), [(i, 1) for i in KEPT])
    with EmbeddingCache(cache / "embeddings.sqlite") as db:
        vec = np.zeros(4, np.float32)
        db.put_many("embed.m:v1:x", [(i, vec) for i in [*KEPT, GONE]]
                    + [(f"{variant}/{KEPT[0]}", vec), (f"{OLD_VARIANT}/{KEPT[0]}", vec)])
    for i in [KEPT[0], GONE]:
        _put(cache / "dedup-features" / "v10-x" / _feature_file(i), b"f" * 1000)
    with ResultCache(cache / "cache.sqlite") as db:
        db.put_many("dedup.features:v10:x", [(i, {"bytes": 1000}) for i in [KEPT[0], GONE]])
    old = sqlite3.connect(cache / "features.sqlite")  # where earlier versions kept features
    old.execute("CREATE TABLE blobs (op TEXT, key TEXT, value BLOB)")
    old.execute("INSERT INTO blobs VALUES ('dedup.features:v9:x', ?, ?)", (KEPT[0], b"f" * 1000))
    old.commit()
    old.close()
    return Workspace(root, params, out, variant, raw)


def _feature_file(image_id: str) -> str:
    return Store(Path()).relpath(image_id, "sft")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "locks" not in p.parts and ".sqlite" not in p.name}


def _rows(root: Path) -> set[tuple[str, str, str]]:
    """(database, op, key) of every cache row, the workspace's path in keys written ROOT."""
    found = set()
    for path in sorted((root / ".cache/curate").glob("*.sqlite")):
        db = sqlite3.connect(path)
        for table, key, _ in gc.TABLES:
            try:
                found |= {(path.name, op, k.replace(str(root), "ROOT")) for op, k in db.execute(
                    f"SELECT op, {key} FROM {table}")}
            except sqlite3.OperationalError:
                continue
        db.close()
    return found


def _referenced(ws: Workspace) -> tuple[set[str], set[tuple[str, str, str]]]:
    """The files and rows gc must never delete."""
    files = {k for k in _files(ws.root)
             if "photos/" in k or k.startswith("data/") and not k.startswith(
                 ("data/store", "data/matte/out"))}
    files |= {f"data/store/{Store(Path()).relpath(i, 'jpg')}" for i in [*KEPT, OUTLIER]}
    for i in KEPT:
        files |= {f"data/matte/out/{ws.variant}/images/{_rel(i)}",
                  f"data/matte/out/{ws.variant}/masks/{_rel(i)}",
                  f"data/matte/out/{ws.raw}/{_rel(i)}",
                  f".cache/curate/prepare/{H_NOW}/{i[:2]}/{i}-0.png"}
    files.add(f".cache/curate/dedup-features/v10-x/{_feature_file(KEPT[0])}")
    rows = {("cache.sqlite", "quality.measure:v2:x", i) for i in [*KEPT, OUTLIER]}
    rows |= {("results.sqlite", prepared_op(H_NOW), i) for i in KEPT}
    rows |= {("embeddings.sqlite", "embed.m:v1:x", f"{ws.variant}/{KEPT[0]}"),
             ("cache.sqlite", "ingest.probe:v1:x", REJECT),
             ("cache.sqlite", "matte.subject_model:v2:x", "model"),
             ("cache.sqlite", "ingest.url:v1:x", f"http://example.com/{GONE}.jpg"),
             ("cache.sqlite", "dedup.features:v10:x", KEPT[0])}
    return files, rows


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


def test_dry_run_counts_what_would_go_and_deletes_nothing(ws: Workspace) -> None:
    files, rows = _files(ws.root), _rows(ws.root)
    plan = gc.plan_gc(ws.params)
    assert _files(ws.root) == files and _rows(ws.root) == rows
    tally = {k: (t.count, t.bytes) for k, t in plan.tally.items()}
    assert tally["store: images no manifest names"] == (2, len(GONE) + 100)  # + the temp file
    assert tally["matte: variants of earlier settings"][0] == 1 + 4 + 1  # a file, rows, a vector
    assert tally["matte: images no longer matted"] == (3, 300)  # composite, mask, raw mask
    assert tally["prepare: crops of earlier settings"][0] == 1 + 4
    assert tally["prepare: crops no dataset holds"] == (1, 100)
    assert tally["ingest records of files gone"][0] == 1
    assert tally["dedup: repost features of images no manifest holds"] == (1, 1000)
    assert tally["cache files of earlier versions, read by nothing now"][0] == 1
    assert plan.bytes == sum(t.bytes for t in plan.tally.values()) > 0


def _stale_rows(ws: Workspace) -> set[tuple[str, str, str]]:
    """The rows gc must delete, and no other."""
    old_matte = f"matte:v3:{OLD_VARIANT[-10:]}abcdef"
    return {("cache.sqlite", "quality.measure:v2:x", GONE),
            ("cache.sqlite", "ingest.probe:v1:x", GONE),
            ("cache.sqlite", "dedup.verify:v1:x", f"{KEPT[0]}|{GONE}"),
            ("cache.sqlite", "ingest.file:v1", "ROOT/tmp/exp/a.jpg|100|1"),
            ("embeddings.sqlite", "embed.m:v1:x", GONE),
            ("embeddings.sqlite", "embed.m:v1:x", f"{OLD_VARIANT}/{KEPT[0]}"),
            ("cache.sqlite", "dedup.features:v10:x", GONE),
            *(("cache.sqlite", old_matte, i) for i in KEPT),
            *(("results.sqlite", prepared_op(H_OLD), i) for i in KEPT)}


def test_gc_frees_exactly_what_no_manifest_references(ws: Workspace) -> None:
    files_before, rows_before = _files(ws.root), _rows(ws.root)
    must_files, must_rows = _referenced(ws)
    plan = gc.plan_gc(ws.params)
    freed = gc.apply(plan)
    files, rows = _files(ws.root), _rows(ws.root)
    assert set(files) == must_files
    assert all(files[k] == files_before[k] for k in files)
    assert _stale_rows(ws) <= rows_before
    assert rows == rows_before - _stale_rows(ws)
    assert must_rows <= rows
    file_bytes = sum(t.bytes for k, t in plan.tally.items()
                     if k.startswith(("store", "matte: images", "prepare: crops no")))
    assert freed >= file_bytes
    assert not (ws.root / ".cache/curate/features.sqlite").exists()
    assert gc.plan_gc(ws.params).tally == {}  # nothing left to free


def test_without_an_ingest_manifest_nothing_is_judged(ws: Workspace) -> None:
    (ws.root / "data/ingest/manifest.parquet").unlink()
    plan = gc.plan_gc(ws.params)
    assert plan.tally == {} and "nothing judged" in plan.notes[0]


def test_without_cards_or_matte_manifest_their_outputs_are_kept(ws: Workspace) -> None:
    (ws.root / "data/matte/manifest.parquet").unlink()
    shutil.rmtree(ws.root / "data/datasets")
    plan = gc.plan_gc(ws.params)
    assert not any(k.startswith(("matte", "prepare")) for k in plan.tally)
    assert {"store: images no manifest names"} <= set(plan.tally)


class Killed(BaseException):
    """What a SIGKILL at that point would leave, as an exception."""


def test_a_gc_stopped_at_any_deletion_leaves_the_referenced_and_the_next_one_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = make_workspace(tmp_path / "reference")
    gc.apply(gc.plan_gc(reference.params))
    final_files, final_rows = set(_files(reference.root)), _rows(reference.root)
    steps = {"_delete_rows": gc._delete_rows, "replace": os.replace, "rmtree": shutil.rmtree,
             "unlink": Path.unlink}
    n = 0
    while True:
        ws = make_workspace(tmp_path / f"kill{n}")
        must_files, must_rows = _referenced(ws)
        count = [0]

        def stop_at(name: str, n: int = n, count: list[int] = count):
            def step(*args, **kwargs):
                if count[0] == n:
                    raise Killed(name)
                count[0] += 1
                return steps[name](*args, **kwargs)
            return step

        with monkeypatch.context() as m:
            m.setattr(gc, "_delete_rows", stop_at("_delete_rows"))
            m.setattr(gc.os, "replace", stop_at("replace"))
            m.setattr(gc.shutil, "rmtree", stop_at("rmtree"))
            m.setattr(Path, "unlink", stop_at("unlink"))
            try:
                gc.apply(gc.plan_gc(ws.params))
                finished = True
            except Killed:
                finished = False
        assert must_files <= set(_files(ws.root)), n
        assert must_rows <= _rows(ws.root), n
        gc.apply(gc.plan_gc(ws.params))  # the next run
        assert set(_files(ws.root)) == final_files
        assert _rows(ws.root) == final_rows
        if finished:
            break
        n += 1
    assert n > 10  # every deletion step was a stopping point


def test_cli_dry_run_says_how_much_and_refuses_under_a_running_stage(ws: Workspace) -> None:
    params_file = ws.root / "params.yaml"
    params_file.write_text(f"paths: {{data: {ws.root / 'data'}, store: {ws.root / 'data/store'}, "
                           f"cache: {ws.root / '.cache/curate'}}}\n")
    runner = CliRunner()
    files = _files(ws.root)
    result = runner.invoke(app, ["gc", "--params", str(params_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would free" in result.output and "store: images no manifest names" in result.output
    assert _files(ws.root) == files
    with shared(ws.params.paths.cache / "locks", ws.params.paths.cache):  # a stage runs
        result = runner.invoke(app, ["gc", "--params", str(params_file)])
    assert result.exit_code == 1 and "a stage is running" in result.output, result.output
    assert _files(ws.root) == files
    result = runner.invoke(app, ["gc", "--params", str(params_file)])
    assert result.exit_code == 0 and "freed" in result.output, result.output
    assert GONE not in "".join(_files(ws.root))
