"""The one cached per-image map every stage runs through: one outcome per item with a stable
reason, the cache read first and committed as results arrive, failures never cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.cache import ResultCache
from core.imageio import ImageRejected
from core.imagemap import COMMIT_EVERY, Failure, cached_map, map_items

OP = "test.square:v1"


def square(x: int) -> int:
    """Fails in each way a stage's function can: rejected, unreadable, a bug, a Failure."""
    if x == 3:
        raise ImageRejected("truncated", "image file is truncated")
    if x == 5:
        raise FileNotFoundError(2, "No such file or directory", f"/store/{x}.jpg")
    if x == 8:
        raise ZeroDivisionError("a bug")
    if x == 9:
        return Failure("matte_failed", "mask of the wrong shape")  # type: ignore[return-value]
    return x * x


def square_or_die(x: int) -> int:
    """Kills its worker process on 7, as a native crash or an OOM kill would."""
    if x == 7:
        os._exit(3)
    return x * x


def offset_squares(items: tuple[int, ...], offset: int) -> list[int | Failure]:
    """A batched function with a per-batch context."""
    return [x * x + offset if x != 4 else Failure("unreadable", "gone") for x in items]


REASONS = {3: "truncated", 5: "unreadable", 8: "internal_error", 9: "matte_failed"}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_yields_one_outcome_with_a_stable_reason(workers: int) -> None:
    out = list(map_items(square, range(12), workers=workers, batch=4, description="t"))
    assert sorted(o.item for o in out) == list(range(12))
    by_item = {o.item: o for o in out}
    failures = {x: by_item.pop(x).failure for x in REASONS}
    assert {x: f.reason for x, f in failures.items() if f} == REASONS
    assert failures[8].describe() == "internal_error: ZeroDivisionError: a bug"  # type: ignore[union-attr]
    assert by_item[0].ok and by_item[0].value == 0
    assert {x: o.value for x, o in by_item.items()} == {x: x * x for x in by_item}


def test_an_item_that_kills_its_worker_is_a_worker_crash_and_costs_only_itself() -> None:
    out = {o.item: o for o in map_items(square_or_die, range(16), workers=2, batch=4)}
    assert out.pop(7).failure.reason == "worker_crash"  # type: ignore[union-attr]
    assert {x: o.value for x, o in out.items()} == {x: x * x for x in range(16) if x != 7}


def test_a_batched_function_gets_its_batch_context() -> None:
    seen: list[tuple[int, ...]] = []

    def context(batch: tuple[int, ...]) -> int:
        seen.append(batch)
        return 100

    out = {o.item: o for o in map_items(offset_squares, range(10), workers=1, batch=3,
                                        batched=True, context=context)}
    assert seen == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    assert out.pop(4).failure == Failure("unreadable", "gone")
    assert {x: o.value for x, o in out.items()} == {x: x * x + 100 for x in out}


def test_cached_map_computes_only_what_the_cache_lacks_and_never_caches_failures(
        tmp_path: Path) -> None:
    calls: list[int] = []

    def counted(x: int) -> int:
        calls.append(x)
        return square(x)

    with ResultCache(tmp_path / "cache.sqlite") as cache:
        first = list(cached_map(OP, list(range(12)), counted, cache, key=str, workers=1))
        assert not any(o.cached for o in first) and sorted(calls) == list(range(12))
        calls.clear()
        again = {o.item: o for o in cached_map(OP, list(range(14)), counted, cache, key=str,
                                                workers=1)}
        assert sorted(calls) == [*REASONS, 12, 13]  # failures are tried again, and the new
        assert again[2].cached and again[2].value == 4
        assert not again[12].cached and again[12].value == 144
        assert cache.get(OP, "3") is None


def test_revisit_and_record(tmp_path: Path) -> None:
    """`revisit` recomputes a cached value that no longer holds (here, as another item);
    `record` is what is cached and yielded."""
    with ResultCache(tmp_path / "cache.sqlite") as cache:
        cache.put_many(OP, [("1", {"v": 1, "stale": False}), ("2", {"v": 4, "stale": True})])
        out = {o.item: o for o in cached_map(
            OP, [1, 2, 4], square, cache, key=str, workers=1,
            revisit=lambda x, v: x if v["stale"] else None,
            record=lambda x, v: {"v": v, "stale": False})}
        assert out[1].cached and out[1].value == {"v": 1, "stale": False}
        assert not out[2].cached and out[2].value == {"v": 4, "stale": False}
        assert cache.get(OP, "4") == {"v": 16, "stale": False}


def test_a_map_stopped_early_keeps_what_it_computed(tmp_path: Path) -> None:
    items = list(range(10, 10 + 2 * COMMIT_EVERY))
    with ResultCache(tmp_path / "cache.sqlite") as cache:
        for n, _ in enumerate(cached_map(OP, items, square, cache, key=str, workers=1)):
            if n == COMMIT_EVERY + 10:
                break  # as when the consumer raises
        assert cache.count(OP) == COMMIT_EVERY + 11


def test_slow_results_are_committed_by_age_not_only_by_count(tmp_path: Path) -> None:
    """A killed matte run must not lose minutes of work waiting for 256 results."""
    from core.cache import BatchWriter

    with ResultCache(tmp_path / "cache.sqlite") as cache:
        writer = BatchWriter(cache, every=1000, max_age_s=0.0)
        writer.put(OP, "1", 1)
        assert cache.get(OP, "1") == 1  # committed at once: it is already max_age_s old
        patient = BatchWriter(cache, every=1000, max_age_s=3600.0)
        patient.put(OP, "2", 4)
        assert cache.get(OP, "2") is None
        patient.flush()
        assert cache.get(OP, "2") == 4
