"""Unit tests for the foundation: config, store, atomic writes, cache, manifest, parallel map."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import random
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core import atomic
from core.cache import ResultCache, op_key
from core.config import ConfigError, from_mapping
from core.manifest import read_table, write_table
from core.parallel import InlineExecutor, make_executor, stream_map
from core.store import Store, content_id
from curate.config import Params, load_params
from curate.ingest.config import IngestConfig, ScrapeConfig, SourceConfig


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if atomic.TEMP_MARKER in p.name]


# ---------------------------------------------------------------------- config


def params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_from_an_empty_file(tmp_path):
    params = load_params(params_file(tmp_path, ""))
    assert params == Params()
    assert params.workers == 0 and params.n_workers == (os.cpu_count() or 1)
    assert params.background == (255, 255, 255)
    assert params.paths.store == Path("data/store")
    assert params.ingest.sources == ()
    assert params.ingest.max_file_bytes == 64 * 1024 * 1024
    assert params.ingest.scrape == ScrapeConfig()
    assert params.ingest.scrape.allow_private_hosts is False


def test_full_file_is_typed(tmp_path):
    params = load_params(params_file(tmp_path, """
workers: 3
background: [0, 0, 0]
paths: {store: /x/store, cache: /x/cache}
ingest:
  max_file_mb: 2
  sources:
    - {kind: folder, path: photos, include: ["*.jpg"]}
    - {kind: urls, path: urls.csv, url_column: link}
  scrape: {timeout_s: 1, retries: 0, allow_private_hosts: true}
"""))
    assert params.workers == 3 and params.n_workers == 3
    assert params.background == (0, 0, 0)
    assert params.paths.store == Path("/x/store") and params.paths.cache == Path("/x/cache")
    assert params.paths.reports == Path("reports")  # untouched default
    folder, urls = params.ingest.sources
    assert folder == SourceConfig(kind="folder", path=Path("photos"), include=("*.jpg",))
    assert folder.exclude == (".*", "*/.*")
    assert (urls.kind, urls.url_column) == ("urls", "link")
    assert isinstance(params.ingest.max_file_mb, float) and params.ingest.max_file_bytes == 2 << 20
    assert params.ingest.scrape.timeout_s == 1.0 and params.ingest.scrape.retries == 0
    assert params.ingest.scrape.concurrency == 32


def test_unknown_key_names_the_key_and_the_allowed_keys(tmp_path):
    path = params_file(tmp_path, "ingest:\n  max_file_gb: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    message = str(exc.value)
    assert str(path) in message
    assert "ingest: unknown key 'max_file_gb'" in message
    allowed = ", ".join(f.name for f in dataclasses.fields(IngestConfig))
    assert f"allowed keys are {allowed}" in message
    assert "sources, max_file_mb, max_pixels, archive, scrape" in allowed


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"top level: unknown key 'wrokers'.*workers"):
        from_mapping(Params, {"wrokers": 2}, "")


def test_bad_literal_names_the_value_and_the_choices():
    data = {"ingest": {"sources": [{"kind": "folder", "path": "a"}, {"kind": "ftp", "path": "b"}]}}
    with pytest.raises(ConfigError) as exc:
        from_mapping(Params, data, "")
    message = str(exc.value)
    assert message.startswith("ingest.sources[1].kind: got 'ftp', expected one of ")
    assert all(repr(kind) in message for kind in ("folder", "archive", "urls"))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"workers": "many"}, "workers: got 'many', expected an integer"),
        ({"workers": True}, "workers: got True, expected an integer"),
        ({"workers": 1.5}, "workers: got 1.5, expected an integer"),
        ({"ingest": {"max_file_mb": "big"}}, "ingest.max_file_mb: got 'big', expected a number"),
        ({"ingest": {"scrape": {"allow_private_hosts": "yes"}}},
         "ingest.scrape.allow_private_hosts: got 'yes', expected true or false"),
        ({"background": "white"}, "background: got 'white', expected a list of an integer"),
        ({"paths": {"store": 5}}, "paths.store: got 5, expected a path"),
        ({"ingest": {"sources": {"kind": "folder"}}}, "ingest.sources: got {'kind': 'folder'}"),
        ({"ingest": []}, "ingest: expected a mapping"),
    ],
)
def test_wrong_type_names_key_value_and_expectation(data, fragment):
    with pytest.raises(ConfigError) as exc:
        from_mapping(Params, data, "")
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"ingest": {"sources": [{"kind": "folder"}]}},
         "ingest.sources[0].path: required key is missing"),
        ({"workers": -1}, "workers: got -1"),
        ({"background": [0, 0, 256]}, "background: got [0, 0, 256]"),
        ({"background": [0, 0]}, "background"),
        ({"ingest": {"max_file_mb": 0}}, "max_file_mb and max_pixels must be positive"),
        ({"ingest": {"scrape": {"concurrency": 0}}}, "ingest.scrape.concurrency: got 0"),
        ({"ingest": {"scrape": {"timeout_s": 0}}}, "timeout_s > 0"),
        ({"prepare": {"keypoints": {"targets": [[0.5, 0.5], [0.5, 0.5]]}}},
         "prepare.keypoints.targets: got [[0.5, 0.5], [0.5, 0.5]], expected two different"),
        ({"prepare": {"keypoints": {"names": ["heel"]}}}, "prepare.keypoints.names: got ['heel']"),
    ],
)
def test_invalid_values_are_refused(data, fragment):
    with pytest.raises(ConfigError) as exc:
        from_mapping(Params, data, "")
    assert fragment in str(exc.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(params_file(tmp_path, "ingest: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_params(params_file(tmp_path, "- a list\n"))


def test_config_is_frozen():
    cfg = from_mapping(IngestConfig, {"max_pixels": 10}, "ingest")
    with pytest.raises(AttributeError):
        cfg.max_pixels = 5  # type: ignore[misc]


# ----------------------------------------------------------------------- store


def test_content_id_is_sha256_hex():
    assert content_id(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert content_id(b"abc") != content_id(b"abd")
    assert len(content_id(b"")) == 64


def test_store_layout_and_idempotent_put(tmp_path):
    store = Store(tmp_path / "store")
    data = b"\xff\xd8\xff fake jpeg bytes"
    image_id = content_id(data)
    rel = store.relpath(image_id, "jpg")
    assert rel == f"{image_id[:2]}/{image_id[2:4]}/{image_id}.jpg"
    assert not store.has(image_id, "jpg")
    path = store.put(data, image_id, "jpg")
    assert path == tmp_path / "store" / rel
    assert path.read_bytes() == data and store.read(image_id, "jpg") == data
    assert store.has(image_id, "jpg") and store.has(image_id, "jpg", len(data))
    assert not store.has(image_id, "png")
    before = path.stat()
    assert store.put(data, image_id, "jpg") == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert temp_leftovers(tmp_path) == []


def test_store_replaces_a_damaged_copy(tmp_path):
    store = Store(tmp_path)
    data = b"0123456789" * 10
    image_id = content_id(data)
    store.path(image_id, "png").parent.mkdir(parents=True)
    store.path(image_id, "png").write_bytes(data[:30])  # a short copy from a crash
    assert store.has(image_id, "png") and not store.has(image_id, "png", len(data))
    store.put(data, image_id, "png")
    assert store.read(image_id, "png") == data


def test_store_sweep_removes_only_temp_files(tmp_path):
    store = Store(tmp_path)
    keep = store.put(b"keep", content_id(b"keep"), "jpg")
    assert list(store.tmp_dir.iterdir()) == []  # writes are staged there, then renamed
    stray = store.tmp_dir / f".{keep.name}{atomic.TEMP_MARKER}abc.jpg"  # a killed write
    stray.write_bytes(b"half")
    assert store.sweep() == 1
    assert keep.exists() and not stray.exists()


# ---------------------------------------------------------------------- atomic


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.parquet"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and atomic.TEMP_MARKER in tmp.name
        assert tmp.suffix == ".parquet"
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert temp_leftovers(tmp_path) == []


def test_atomic_outputs_get_the_mode_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        importlib.reload(atomic)  # the mode is read from the umask at import
        atomic.write_text(tmp_path / "report.html", "<html></html>")
        assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    finally:
        os.umask(old)
        importlib.reload(atomic)


def test_atomic_path_leaves_old_file_and_no_temp_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half-written")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert temp_leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_error_before_writing(tmp_path):
    with pytest.raises(KeyError), atomic.atomic_path(tmp_path / "never.txt"):
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_write_bytes_and_text_replace(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic.write_bytes(target, b"one")
    atomic.write_text(target, "zwei \u00fc")
    assert target.read_text(encoding="utf-8") == "zwei \u00fc"
    assert temp_leftovers(tmp_path) == []


def test_sweep_temp_files(tmp_path):
    leftovers = [
        tmp_path / f".a.txt{atomic.TEMP_MARKER}x1.txt",
        tmp_path / "d1" / "d2" / f".b.png{atomic.TEMP_MARKER}y2.png",
    ]
    kept = [tmp_path / "a.txt", tmp_path / "d1" / "d2" / "b.png", tmp_path / "d1" / "tmp-not.txt"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert atomic.sweep_temp_files(tmp_path) == 2
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)
    assert atomic.sweep_temp_files(tmp_path) == 0
    assert atomic.sweep_temp_files(tmp_path / "missing") == 0


# ----------------------------------------------------------------------- cache


def test_op_key_identity():
    assert op_key("probe", 1) == "probe:v1"
    assert op_key("probe", 1, {}) == "probe:v1"
    base = op_key("probe", 1, {"a": 1, "b": 2})
    assert base == op_key("probe", 1, {"b": 2, "a": 1})  # order does not matter
    assert base.startswith("probe:v1:")
    assert base != op_key("probe", 2, {"a": 1, "b": 2})
    assert base != op_key("probe", 1, {"a": 1, "b": 3})
    assert base != op_key("other", 1, {"a": 1, "b": 2})


def test_cache_round_trip_and_persistence(tmp_path):
    path = tmp_path / "deep" / "cache.sqlite"
    op, other = op_key("m", 1), op_key("m", 2)
    values = {f"id{i:05d}": {"w": i, "tags": ["a", i % 3], "ok": i % 2 == 0} for i in range(1203)}
    with ResultCache(path) as cache:
        cache.put_many(op, values.items())
        cache.put(other, "id00001", "other-op")
        cache.put(op, "single", [1, 2.5, None])
        assert cache.get(op, "id00007") == values["id00007"]
        assert cache.get(op, "nope") is None
        assert cache.get(other, "id00002") is None  # ops do not mix
        found = cache.get_many(op, [*values, "missing-1", "missing-2"])  # > 500 keys: chunked
        assert found == values
    with ResultCache(path) as cache:  # reopened: persisted
        assert cache.count(op) == 1204 and cache.count(other) == 1
        assert cache.get(op, "single") == [1, 2.5, None]
        assert cache.get(other, "id00001") == "other-op"
        cache.put(op, "single", {"replaced": True})
        cache.delete(op, ["id00000", "id00001"])
        assert cache.get(op, "single") == {"replaced": True}
        assert cache.get_many(op, ["id00000", "id00001", "id00002"]) == {
            "id00002": values["id00002"]
        }
        assert dict(cache.items(other)) == {"id00001": "other-op"}


def test_cache_put_many_is_all_or_nothing(tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(TypeError):
            cache.put_many("op", [("a", 1), ("b", object())])  # not JSON-serialisable
        assert cache.count("op") == 0


# -------------------------------------------------------------------- manifest


def sample_frame(seed: int) -> pd.DataFrame:
    rows = [
        {"image_id": f"{i:02x}" * 4, "source": "folder", "width": i, "uris": [f"u{i}", "v"],
         "note": None if i % 2 else "x"}
        for i in range(40)
    ]
    random.Random(seed).shuffle(rows)
    return pd.DataFrame(rows)


def test_manifest_is_sorted_and_byte_identical(tmp_path):
    a, b = tmp_path / "a" / "m.parquet", tmp_path / "b" / "m.parquet"
    write_table(sample_frame(seed=1), a, sort_by=["image_id"])
    write_table(sample_frame(seed=1), b, sort_by=["image_id"])
    assert a.read_bytes() == b.read_bytes()
    write_table(sample_frame(seed=2), b, sort_by=["image_id"])  # other row order, same rows
    assert a.read_bytes() == b.read_bytes()
    back = read_table(a)
    assert back["image_id"].tolist() == sorted(back["image_id"])
    assert list(back.columns) == ["image_id", "source", "width", "uris", "note"]
    assert list(back.loc[0, "uris"]) == ["u0", "v"]
    assert back.index.tolist() == list(range(40))
    assert pq.read_schema(a).metadata is None  # no pandas/version metadata
    assert temp_leftovers(tmp_path) == []


def test_manifest_empty_frame(tmp_path):
    path = tmp_path / "empty.parquet"
    write_table(pd.DataFrame(columns=["image_id", "width"]), path, sort_by=["image_id"])
    back = read_table(path)
    assert len(back) == 0 and list(back.columns) == ["image_id", "width"]


def test_read_missing_manifest_says_which_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        read_table(tmp_path / "nope.parquet")


# -------------------------------------------------------------------- parallel


def checked_square(x: int) -> int:
    if x == 13:
        raise ValueError(f"unlucky {x}")
    return x * x


@pytest.fixture(params=[1, 2], ids=["inline", "process-pool"])
def executor(request):
    ex = make_executor(request.param)
    assert isinstance(ex, InlineExecutor) == (request.param == 1)
    yield ex
    ex.shutdown()


def test_small_work_runs_inline_rather_than_starting_a_pool():
    from core.parallel import POOL_START_S

    assert isinstance(make_executor(2, work_s=POOL_START_S / 10), InlineExecutor)
    pool = make_executor(2, work_s=POOL_START_S * 10)
    assert not isinstance(pool, InlineExecutor)
    pool.shutdown()
    assert isinstance(make_executor(2, tasks=1), InlineExecutor)  # one task needs no pool


def test_stream_map_reports_errors_per_item(executor):
    done: list[int] = []
    out = list(stream_map(executor, checked_square, range(30), max_in_flight=4,
                          on_done=lambda: done.append(1)))
    assert sorted(item for item, _, _ in out) == list(range(30))
    assert len(done) == 30
    results = {item: (result, error) for item, result, error in out}
    result, error = results.pop(13)
    assert result is None and isinstance(error, ValueError) and str(error) == "unlucky 13"
    assert results == {x: (x * x, None) for x in range(30) if x != 13}


def test_inline_and_pool_give_the_same_results():
    outcomes = []
    for workers in (1, 2):
        ex = make_executor(workers)
        try:
            outcomes.append(sorted(
                (item, result, repr(error))
                for item, result, error in stream_map(ex, checked_square, range(20))
            ))
        finally:
            ex.shutdown()
    assert outcomes[0] == outcomes[1]


def test_stream_map_bounds_submissions():
    in_flight, peak = 0, 0

    class Counting(InlineExecutor):
        def submit(self, fn, /, *args, **kwargs):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            return super().submit(fn, *args, **kwargs)

    for _ in stream_map(Counting(), checked_square, range(50), max_in_flight=3):
        in_flight -= 1
    assert peak <= 3


def square_or_die(x: int) -> int:
    """Kills its worker process on 7, like a native crash or an OOM kill would."""
    if x == 7:
        os._exit(3)
    return x * x


def batch_of_squares(batch: tuple[int, ...]) -> list[int]:
    return [square_or_die(x) for x in batch]


def test_a_dying_worker_costs_its_item_not_the_stage():
    from core.parallel import RestartingPool, WorkerCrash, error_reason

    pool = make_executor(2)
    assert isinstance(pool, RestartingPool)
    try:
        done: list[int] = []
        out = list(stream_map(pool, square_or_die, range(40), max_in_flight=6,
                              on_done=lambda: done.append(1)))
    finally:
        pool.shutdown()
    assert sorted(item for item, _, _ in out) == list(range(40)) and len(done) == 40
    results = {item: (result, error) for item, result, error in out}
    result, error = results.pop(7)
    assert result is None and isinstance(error, WorkerCrash)
    assert error_reason(error) == "worker_crash" and error_reason(ValueError()) == "internal_error"
    assert results == {x: (x * x, None) for x in range(40) if x != 7}
    assert pool.restarts == 2  # once for the crash among others, once for 7 alone


def test_a_batch_that_kills_its_worker_is_retried_image_by_image():
    from core.parallel import WorkerCrash

    batches = [tuple(range(s, s + 4)) for s in range(0, 20, 4)]
    pool = make_executor(2)
    try:
        out = list(stream_map(pool, batch_of_squares, batches, max_in_flight=3,
                              split=lambda batch: [(x,) for x in batch]))
    finally:
        pool.shutdown()
    results = {item: (result, error) for item, result, error in out}
    assert isinstance(results.pop((7,))[1], WorkerCrash)
    assert results[(4,)] == ([16], None)  # the crashing batch's other images, one by one
    squares = {x: y for item, (result, error) in results.items() if error is None
               for x, y in zip(item, result, strict=True)}
    assert squares == {x: x * x for x in range(20) if x != 7}
    assert all(error is None for _, error in results.values())


def test_a_name_registered_twice_fails_loudly():
    from curate.registry import name_registry

    registry: dict = {}
    register = name_registry(registry, "widget")

    @register
    class First:
        name = "w"

    with pytest.raises(ValueError, match="widget 'w' registered twice"):
        @register
        class Second:
            name = "w"
    assert registry == {"w": First}


# ---------------------------------------------------------------------- stage summary


def test_step_times_are_printed_and_never_saved(tmp_path: Path, capsys) -> None:
    import time

    from core.console import StageSummary

    summary = StageSummary("dedup")
    summary.count("kept", n=3)
    for _ in range(2):
        with summary.phase("hashes"):
            time.sleep(0.02)
    with pytest.raises(KeyError), summary.phase("report"):
        raise KeyError("a failing step is timed too")
    assert list(summary.phases) == ["hashes", "report"]
    assert summary.phases["hashes"] >= 0.04
    summary.save(tmp_path / "summary.json")
    assert "hashes" not in (tmp_path / "summary.json").read_text()
    summary.print()
    assert "dedup: time by step: hashes 0.0 s, report 0.0 s" in capsys.readouterr().err
