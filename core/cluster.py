"""Per-image tasks on a Dask cluster (`compute.engine: dask` in params.yaml).

The stages never see Dask: `parallel.make_executor` hands them this module's executor, which
has the `concurrent.futures.Executor` interface `parallel.stream_map` drives. What Dask adds
over the local pool is other machines, and its own recovery: a worker that dies (OOM kill,
node lost) has its tasks rescheduled on the others by the scheduler, and a task that kills
`distributed.scheduler.allowed-failures` (3) workers fails with `KilledWorker`, which the
stages record as `worker_crash` like the local pool's `WorkerCrash`.

Workers must see the project's files at the same path as the coordinator (a shared file
system): every task names its inputs and outputs by paths relative to the project root, and a
worker plugin moves each worker into that root when it starts, and checks that it exists.
Per-worker state (ONNX sessions, the torch models, HTTP clients) lives in module caches of the
worker process, so it is built once per worker, as in the local pool.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import dask
from dask.distributed import Client, LocalCluster, WorkerPlugin

from core.config import ComputeConfig
from core.errors import ClusterError
from core.memory import reuse_freed_memory

R = TypeVar("R")

_client: Client | None = None
_connected_to: ComputeConfig | None = None


class ProjectRoot(WorkerPlugin):
    """Run the worker inside the coordinator's project folder, with malloc set to reuse what
    it frees (`core.memory.reuse_freed_memory`: Dask's nanny makes it return every large
    block to the system, which cut the embedding throughput by more than half)."""

    name = "gan-curate-project-root"

    def __init__(self, root: str) -> None:
        self.root = root

    def setup(self, worker: Any) -> None:
        if not os.path.isdir(self.root):
            raise ClusterError(
                f"worker {worker.address} cannot see the project folder {self.root}: "
                "mount the shared file system at the same path on every machine")
        os.chdir(self.root)
        reuse_freed_memory()


class DaskExecutor(Executor):
    """Tasks submitted to the cluster; `slots` (its worker threads) sizes the work in flight."""

    def __init__(self, client: Client, resources: dict[str, float] | None = None) -> None:
        workers = client.scheduler_info()["workers"].values()
        if resources:
            able = [w for w in workers
                    if all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items())]
            if not able:
                raise ClusterError(
                    f"these tasks need workers with resources {resources} and no worker of "
                    "the cluster declares them: start GPU workers with `dask worker ADDRESS "
                    "--resources GPU=1` (one per GPU), or set device: auto")
            workers = able
        self._executor = client.get_executor(pure=False, resources=resources)
        self.slots = max(1, sum(w.get("nthreads", 1) for w in workers))

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel or wait for this executor's tasks; the cluster stays up for the next stage."""
        self._executor.shutdown(wait=wait and not cancel_futures)


def executor(config: ComputeConfig, workers: int,
             resources: dict[str, float] | None = None) -> DaskExecutor:
    """An executor on the cluster of `config` (connecting, or starting a LocalCluster of
    `workers` processes, on first use; one connection per process)."""
    global _client, _connected_to
    if _client is None or _connected_to != config:
        close()
        _client, _connected_to = _connect(config, workers), config
        atexit.register(close)
    return DaskExecutor(_client, resources)


def _connect(config: ComputeConfig, workers: int) -> Client:
    try:
        if config.address:
            client = Client(config.address, timeout=config.connect_timeout_s)
        else:
            # No dashboard, so no one reads the workers' statistical profiler: it would only
            # sample every thread's stack every 10 ms beside the work (the nannies hand the
            # configuration at their start to the workers they start and restart).
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                       processes=True, host="127.0.0.1",
                                       dashboard_address=None)
            client = Client(cluster, timeout=config.connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {config.address}: {exc}; "
                           "start it (`dask scheduler`) or fix compute.address") from exc
    try:
        client.wait_for_workers(1, timeout=config.connect_timeout_s)
    except TimeoutError as exc:
        client.close()
        raise ClusterError(f"the Dask scheduler at {config.address} has no workers after "
                           f"{config.connect_timeout_s:g} s: start some (`dask worker "
                           f"{config.address}`)") from exc
    client.register_plugin(ProjectRoot(os.getcwd()), name=ProjectRoot.name)
    return client


def close() -> None:
    """Disconnect (and stop the LocalCluster this process started)."""
    global _client, _connected_to
    if _client is None:
        return
    client, _client, _connected_to = _client, None, None
    cluster = client.cluster
    if cluster is not None:
        _stop_heartbeats(client)
    client.close()
    if cluster is not None:
        cluster.close()


def _stop_heartbeats(client: Client) -> None:
    """Stop our LocalCluster's workers heartbeating before it closes: a heartbeat in flight
    when the scheduler shuts down is logged by the worker as a traceback on the stage's
    stderr ("Failed to communicate with scheduler during heartbeat"), which reads as a crash
    at the end of a run that went well. A worker already gone has nothing to stop."""
    try:
        client.run(_stop_heartbeat, on_error="ignore")
    except (OSError, TimeoutError):
        pass


def _stop_heartbeat(dask_worker: Any) -> None:
    """On a worker: stop its periodic heartbeat to the scheduler."""
    dask_worker.periodic_callbacks["heartbeat"].stop()
