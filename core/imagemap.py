"""One cached, parallel map over per-image work: what every curation stage runs its images
through.

A stage states only what is specific to it: the work items, a pure function of one item (or of
one batch, for batched inference) and, for `cached_map`, the cache operation that keys its
results. This module owns the rest, the same way for every stage:

- **Cache**: cached results are read in chunks and yielded first, so a rerun computes only
  what is new (adding 1% more images costs about 1%). Computed results are committed in
  batches as they arrive, so a killed run keeps everything committed before it.
- **Batching and bounds**: items travel to workers in batches of `batch`, at most
  `2 * workers + 2` batches in flight (more on a cluster with more slots), so a stream of a
  million items never sits in memory as a million futures.
- **Executor lifetime**: a pool sized to the work (inline when the work is too small to pay
  for starting workers), shut down at the end; or the caller's, left running.
- **Failures**: every item yields exactly one `Outcome`, either a value or a `Failure` with a
  stable reason code. An undecodable image is `ImageRejected`'s reason, an unreadable file
  `unreadable`, a bug `internal_error`, and an item that kills its worker twice `worker_crash`
  (see `core.parallel.stream_map`). One bad image never stops a stage.
- **Progress**: one bar per map, advanced per item.

Worker functions must be picklable: module-level functions, or `functools.partial` of one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from core.cache import BatchWriter, KeyValueCache
from core.console import progress_bar
from core.imageio import ImageRejected
from core.parallel import error_reason, make_executor, stream_map

T = TypeVar("T")
V = TypeVar("V")

#: Computed results committed per transaction (or fewer, every `COMMIT_AGE_S`): a killed run
#: loses at most this many, or that many seconds of work.
COMMIT_EVERY = 256
COMMIT_AGE_S = 10.0
#: Cached results read per query while streaming them out.
LOOKUP_CHUNK = 2048


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one item gave no result: a stable reason code (for manifests and summaries) and a
    message for people."""

    reason: str
    message: str

    def describe(self) -> str:
        """`reason: message`, the text of manifests' message columns."""
        return f"{self.reason}: {self.message}"

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        """The failure an exception stands for (raised by the item's function or its worker)."""
        if isinstance(error, ImageRejected):
            return cls(error.reason, error.message)
        reason = error_reason(error)
        if reason == "internal_error" and isinstance(error, OSError):
            return cls("unreadable", str(error))
        if reason == "internal_error":
            return cls(reason, f"{type(error).__name__}: {error}")
        return cls(reason, str(error))


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T, V]):
    """The result of one item: its value (computed or `cached`), or why it has none."""

    item: T
    value: V | None = None
    failure: Failure | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None


def attempt(fn: Callable[..., V], *args: Any) -> V | Failure:
    """`fn(*args)`, or the `Failure` it raised: for batched functions that must give each
    item of a batch its own result."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one item's error is that item's Failure
        return Failure.of(exc)


@dataclass(frozen=True)
class _Batch:
    """What one worker task runs: `fn` over `items`, with the batch's shared `context`."""

    fn: Callable[..., Any]
    items: tuple[Any, ...]
    batched: bool
    context: Any = None


def _run_batch(batch: _Batch) -> list[Any]:
    """Worker side: one result (value or `Failure`) per item, in item order."""
    extra = () if batch.context is None else (batch.context,)
    if batch.batched:
        return list(batch.fn(batch.items, *extra))
    return [attempt(batch.fn, item, *extra) for item in batch.items]


def _singles(batch: _Batch) -> list[_Batch]:
    """A batch cut into one-item batches, to find the item that kills a worker."""
    return [_Batch(batch.fn, (item,), batch.batched, batch.context) for item in batch.items]


def map_items(
    fn: Callable[..., Any],
    items: Iterable[T],
    *,
    workers: int,
    description: str | None = None,
    advance: Callable[[int], None] | None = None,
    batch: int = 1,
    batched: bool = False,
    context: Callable[[tuple[T, ...]], Any] | None = None,
    work_s: float | None = None,
    gpu: bool = False,
    executor: Executor | None = None,
) -> Iterator[Outcome[T, Any]]:
    """One `Outcome` per item of `items`, in completion order, computed on the workers.

    `fn(item)` returns the item's value, or raises (or returns) a `Failure`. With `batched`,
    `fn(items)` takes a whole batch and returns one value or `Failure` per item, in order
    (batched inference). `context(batch_items)`, run here, gives what a batch shares and is
    passed to `fn` as its last argument (data only the coordinator may read).

    Progress goes to a new bar named `description`, or to the caller's `advance`. `work_s`
    (the whole work's time on one core, when known) and `gpu` size the executor
    (`core.parallel.make_executor`); a given `executor` is used and left running.
    """
    total = len(items) if isinstance(items, Sequence) else None
    if total == 0:
        return
    with ExitStack() as stack:
        if executor is None:
            tasks = None if total is None else -(-total // batch)
            executor = make_executor(workers, work_s, gpu, tasks)
            stack.callback(executor.shutdown, cancel_futures=True)
        if advance is None:
            advance = stack.enter_context(progress_bar(description or "work", total=total))
        iterator = iter(items)
        chunks = iter(lambda: tuple(itertools.islice(iterator, batch)), ())
        tasks_in = (_Batch(fn, chunk, batched, context(chunk) if context else None)
                    for chunk in chunks)
        for task, results, error in stream_map(executor, _run_batch, tasks_in,
                                               max_in_flight=2 * workers + 2, split=_singles):
            if error is not None:  # the whole batch failed: its worker died, or a bug
                results = [Failure.of(error)] * len(task.items)
            for item, result in zip(task.items, results or [], strict=True):
                if isinstance(result, Failure):
                    yield Outcome(item, failure=result)
                else:
                    yield Outcome(item, result)
            advance(len(task.items))


def cached_map(
    op: str,
    items: Sequence[T],
    fn: Callable[..., Any],
    cache: KeyValueCache,
    *,
    key: Callable[[T], str],
    workers: int,
    revisit: Callable[[T, Any], T | None] | None = None,
    record: Callable[[T, Any], Any] | None = None,
    **options: Any,
) -> Iterator[Outcome[T, Any]]:
    """`map_items` over those of `items` whose result is not cached under `op`.

    Cached results are yielded first (`cached=True`), then the computed ones, each committed
    to the cache (in transactions of `COMMIT_EVERY`, or after `COMMIT_AGE_S`) before the map
    ends. Failures are never
    cached: the item is tried again on the next run. Keys must be unique among `items`.

    `revisit(item, cached_value)` says whether a cached value still holds: None when it does,
    else the item to compute instead (the item itself, or a cheaper variant such as "only
    re-measure"). `record(item, value)` turns a computed value into what is cached and
    yielded (and may write the files the value stands for first).
    """
    todo: list[T] = []
    for start in range(0, len(items), LOOKUP_CHUNK):
        chunk = items[start : start + LOOKUP_CHUNK]
        keys = [key(item) for item in chunk]
        found = cache.get_many(op, keys)
        for item, k in zip(chunk, keys, strict=True):
            if k not in found:
                todo.append(item)
                continue
            again = revisit(item, found[k]) if revisit is not None else None
            if again is None:
                yield Outcome(item, found[k], cached=True)
            else:
                todo.append(again)
    writer = BatchWriter(cache, COMMIT_EVERY, COMMIT_AGE_S)
    try:
        for outcome in map_items(fn, todo, workers=workers, **options):
            if outcome.ok:
                value = outcome.value if record is None else record(outcome.item,
                                                                     outcome.value)
                writer.put(op, key(outcome.item), value)
                outcome = Outcome(outcome.item, value)
            yield outcome
    finally:
        writer.flush()
