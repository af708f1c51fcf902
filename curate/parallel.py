"""Parallel map over images behind the `concurrent.futures.Executor` interface.

Stages map a pure per-image function over a stream of work items. Keeping the
interface a plain Executor means a cluster engine's executor (Dask's
`Client.get_executor()`, Ray's) can replace the local process pool unchanged.
Submission is bounded, so a stream of a million items never sits in memory as
a million futures.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class InlineExecutor(Executor):
    """Runs each task at submit time in this process: for `--workers 1`, tests and debugging."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered to the caller like a pool would
            future.set_exception(exc)
        return future


def _exit_with_coordinator() -> None:
    """Worker initializer: die when the coordinating process dies (even by SIGKILL).

    Workers hold both ends of the task pipe, so without this they would wait forever for work
    from a coordinator that is gone, keeping the forkserver alive too.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-coordinator", daemon=True).start()


#: About what starting a pool costs before its first result: a forkserver, then each worker
#: re-imports the coordinator's main module (the `curate` CLI) and the task's modules.
POOL_START_S = 0.5


def make_executor(workers: int, work_s: float | None = None) -> Executor:
    """A process pool of `workers` (0 = all cores), or inline execution.

    Inline for 1 worker, and when `work_s` (the caller's estimate of the whole work's time on
    one core) is below `POOL_START_S`: a rerun that finds a handful of new images would spend
    more time starting workers than working. Workers start with `forkserver` so they never
    inherit threads (an HTTP client's resolver, ONNX runtime pools) from the coordinator.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1 or (work_s is not None and work_s < POOL_START_S):
        return InlineExecutor()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_exit_with_coordinator)


def stream_map(
    executor: Executor,
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_in_flight: int = 64,
    on_done: Callable[[], None] | None = None,
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield `(item, result, error)` as tasks complete, keeping at most `max_in_flight` queued.

    An exception raised by `fn` for one item is yielded as its `error`, so one
    bad image never stops the stage.
    """
    pending: dict[Future[R], T] = {}

    def drain(block_until_below: int) -> Iterator[tuple[T, R | None, BaseException | None]]:
        while len(pending) > block_until_below:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                error = future.exception()
                if on_done is not None:
                    on_done()
                yield item, (None if error else future.result()), error

    for item in items:
        pending[executor.submit(fn, item)] = item
        yield from drain(max_in_flight - 1)
    yield from drain(0)
