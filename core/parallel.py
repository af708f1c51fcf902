"""Parallel map over images behind the `concurrent.futures.Executor` interface.

Stages map a pure per-image function over a stream of work items. Keeping the
interface a plain Executor lets a Dask cluster (`compute.engine: dask`, see
`core.cluster`) replace the local process pool unchanged. Submission is bounded, so a
stream of a million items never sits in memory as a million futures.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

from core.memory import reuse_freed_memory

if TYPE_CHECKING:
    from core.config import ComputeConfig

T = TypeVar("T")
R = TypeVar("R")


class InlineExecutor(Executor):
    """Runs each task at submit time in this process: for `--workers 1`, tests and debugging."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller as a pool would
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


def _init_worker() -> None:
    """Pool worker initializer."""
    _exit_with_coordinator()
    reuse_freed_memory()


#: About what starting a pool costs before its first result: a forkserver, then each worker
#: re-imports the coordinator's main module (the `curate` CLI) and the task's modules.
POOL_START_S = 0.5


class WorkerCrash(RuntimeError):
    """A task killed its worker process (native crash, OOM kill, os._exit) twice: once among
    others, once alone. The stages record it with the reason code `worker_crash`."""

    reason = "worker_crash"


def error_reason(error: BaseException) -> str:
    """The reason code of an error `stream_map` yielded: a task that killed its workers (the
    local pool's `WorkerCrash`, Dask's `KilledWorker`) is `worker_crash`, anything else
    `internal_error` (see `core.imagemap.Failure`)."""
    if isinstance(error, WorkerCrash) or type(error).__name__ == "KilledWorker":
        return WorkerCrash.reason
    return "internal_error"


class RestartingPool(Executor):
    """A process pool that starts afresh after a worker died.

    Python's pool breaks for good when one worker dies (every pending future fails with
    `BrokenProcessPool`); `stream_map` calls `restart` and runs the tasks that were in flight
    again, so a worker lost to one bad image or an OOM kill costs that image, not the stage.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = self._start()
        self.restarts = 0

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers,
                                   mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_init_worker)

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return self._pool.submit(fn, *args, **kwargs)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()
        self.restarts += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


_engine: ComputeConfig | None = None  # set by use_engine; None = the local pool


def use_engine(config: ComputeConfig) -> None:
    """Run the executors made from now on in this process where `config` says."""
    global _engine
    _engine = config if config.engine != "local" else None


def engine_is_local() -> bool:
    """Whether the executors run on this machine (so its devices are the workers' devices)."""
    return _engine is None


def make_executor(workers: int, work_s: float | None = None, gpu: bool = False,
                  tasks: int | None = None) -> Executor:
    """An executor on the configured engine: a restarting process pool of `workers`
    (0 = all cores; no more than `tasks`, the number of tasks when known), a Dask cluster
    (started with `workers` when it is a LocalCluster, whatever this map's size: the cluster
    serves the stage's later maps too), or inline execution.

    Inline when `work_s` (the caller's estimate of the whole work's time on one core) is below
    `POOL_START_S`: a rerun that finds a handful of new images would spend more time starting
    workers than working; and for 1 worker on the local engine. Local workers start with
    `forkserver` so they never inherit threads (an HTTP client's resolver, ONNX runtime pools)
    from the coordinator. `gpu`: the tasks need a CUDA GPU; on Dask they go only to workers
    that declare a `GPU` resource.
    """
    workers = workers or os.cpu_count() or 1
    if work_s is not None and work_s < POOL_START_S:
        return InlineExecutor()
    if _engine is not None:
        from core import cluster

        return cluster.executor(_engine, workers, {"GPU": 1} if gpu else None)
    if tasks is not None:
        workers = min(workers, max(1, tasks))
    if workers == 1:
        return InlineExecutor()
    return RestartingPool(workers)


def stream_map(
    executor: Executor,
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_in_flight: int = 64,
    on_done: Callable[[], None] | None = None,
    split: Callable[[T], list[T]] | None = None,
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield `(item, result, error)` as tasks complete, keeping at most `max_in_flight` queued.

    An exception raised by `fn` for one item is yielded as its `error`, so one bad image never
    stops the stage. When a worker process dies, a `RestartingPool` is restarted and the items
    that were in flight run again one at a time (a batch item is first cut into its single
    images by `split`); an item that kills a worker alone is yielded with a `WorkerCrash`.
    """
    # A cluster has more slots than the caller's local worker count: keep them all busy.
    max_in_flight = max(max_in_flight, 2 * getattr(executor, "slots", 0))
    pending: dict[Future[R], T] = {}
    crashed: list[T] = []  # in flight when a worker died (only with a RestartingPool)
    restartable = isinstance(executor, RestartingPool)

    def finish(item: T, future: Future[R]) -> tuple[T, R | None, BaseException | None]:
        error = future.exception()
        if on_done is not None:
            on_done()
        return item, (None if error else future.result()), error

    def drain(block_until_below: int) -> Iterator[tuple[T, R | None, BaseException | None]]:
        while len(pending) > block_until_below:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                if restartable and isinstance(future.exception(), BrokenProcessPool):
                    crashed.append(item)
                else:
                    yield finish(item, future)
            if crashed:
                yield from isolate()

    def isolate() -> Iterator[tuple[T, R | None, BaseException | None]]:
        """Restart the pool and run every item that was in flight alone."""
        wait(pending)  # the rest of the broken pool's tasks: done, or failed with it
        for future, item in list(pending.items()):
            if isinstance(future.exception(), BrokenProcessPool):
                crashed.append(item)
            else:
                yield finish(item, future)
        pending.clear()
        suspects = [one for item in crashed for one in (split(item) if split else [item])]
        crashed.clear()
        assert isinstance(executor, RestartingPool)
        executor.restart()
        for item in suspects:
            future = executor.submit(fn, item)
            if isinstance(future.exception(), BrokenProcessPool):
                executor.restart()
                future = Future()
                future.set_exception(WorkerCrash(
                    "the worker process died twice on this item (a native crash, out of "
                    "memory or os._exit); skipped"))
            yield finish(item, future)

    for item in items:
        try:
            pending[executor.submit(fn, item)] = item
        except BrokenProcessPool:  # broke since the last wait; its in-flight tasks fail soon
            if not restartable:
                raise
            crashed.append(item)
        yield from drain(max_in_flight - 1)
    yield from drain(0)
    if crashed:  # the pool broke on the last submissions, with nothing left in flight
        yield from isolate()


def batches(items: Sequence[T], size: int) -> Iterator[tuple[T, ...]]:
    """`items` in consecutive tuples of `size` (the last may be shorter): worker tasks."""
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def one_thread_per_worker() -> None:
    """In a pool worker, keep OpenCV and BLAS single-threaded: the pool already uses every
    core, and N workers x N library threads only adds contention (on the small matrix
    products of repost verification, 4x slower measured on 2 cores)."""
    import cv2
    from threadpoolctl import threadpool_limits

    global _LIMITED
    if not _LIMITED and multiprocessing.parent_process() is not None:
        cv2.setNumThreads(1)
        threadpool_limits(1)
        _LIMITED = True


_LIMITED = False  # per process: one_thread_per_worker has run
