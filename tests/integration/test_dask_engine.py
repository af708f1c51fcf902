"""`compute.engine: dask`: the stages on a real Dask cluster give the local pool's outputs, and
a worker lost mid-run (or killed by one image, again and again) does not fail the work.

Two real clusters: the LocalCluster a stage starts itself (2 worker processes), and a
`dask scheduler` with 2 `dask worker` processes on 127.0.0.1, started and stopped here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from core.config import ComputeConfig
from core.errors import ClusterError
from core.parallel import error_reason, make_executor, stream_map, use_engine
from core.polling import until
from curate.demo.generate import generate_demo
from curate.project.edit import set_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
POISON = 13  # the item that kills every worker it runs on


def slow_square(x: int) -> int:
    """A task that takes a moment (so some are in flight when a worker is killed)."""
    if x == POISON:
        os._exit(1)
    time.sleep(0.05)
    return x * x


def _env() -> dict[str, str]:
    """Workers import this module's tasks; projects use this checkout's provisioned models."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
                CURATE_MODELS_DIR=os.environ.get("CURATE_MODELS_DIR")
                or str(REPO / "models" / "pretrained"))


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _scheduler_address(scheduler_file: Path, proc: subprocess.Popen) -> str:
    """The address the scheduler bound (port 0: the system's choice, so no race for a port)."""

    def written() -> str | None:
        assert proc.poll() is None, "dask scheduler exited"
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(scheduler_file.read_text())["address"]
        return None

    return until(written, "the dask scheduler's address file", 60, interval=0.2)


@pytest.fixture()
def scheduler(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A `dask scheduler` and 2 `dask worker` processes (no nanny: a killed worker stays dead,
    so its tasks must move to the other)."""
    scheduler_file = tmp_path / "scheduler.json"
    # A task is given up after killing 2 workers (allowed-failures 1), so the killer image
    # cannot use up the workers the other tasks need; and each worker holds only the task it
    # runs (saturation 1.0), so a death never counts against a task queued behind the killer.
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                              cwd=REPO, env={**_env(),
                                             "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
                                             "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION":
                                             "1.0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = _scheduler_address(scheduler_file, procs[0])
    workers = [subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1",
                                 "--nworkers", "1", "--no-nanny", "--host", "127.0.0.1",
                                 "--no-dashboard"],
                                cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        yield address, workers
    finally:
        use_engine(ComputeConfig())
        from core import cluster

        cluster.close()
        for proc in [*workers, *procs]:
            proc.kill()
            proc.wait()


def test_a_lost_worker_moves_its_tasks_and_a_killer_image_is_a_worker_crash(scheduler) -> None:
    address, workers = scheduler
    use_engine(ComputeConfig(engine="dask", address=address))
    executor = make_executor(2)
    results, errors = {}, {}
    killed = False
    for x, value, error in stream_map(executor, slow_square, range(40), max_in_flight=8):
        if error is not None:
            errors[x] = error_reason(error)
        else:
            results[x] = value
        if len(results) == 5 and not killed:
            killed = True
            workers[0].send_signal(signal.SIGKILL)
            # A nanny-less worker that dies stays dead: start two more, so that one is left
            # for the other tasks after the killer image has killed two.
            workers.extend(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                 "--host", "127.0.0.1", "--no-dashboard"], cwd=REPO, env=_env(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2))
    executor.shutdown()
    assert errors == {POISON: "worker_crash"}
    assert results == {x: x * x for x in range(40) if x != POISON}
    with pytest.raises(ClusterError, match="--resources GPU=1"):  # no worker declares a GPU
        make_executor(2, gpu=True)


def _project(root: Path) -> Path:
    generate_demo(root / "gen", seed=3, n_base=12, workers=2)
    project = root / "project"
    _run(["curate", "init", "--source", str(root / "gen" / "raw"), "--dir", str(project),
          "--categories", "soles,pov", "--resolution", "128", "--no-git", "--no-dvc-add"], root)
    set_key(project / "params.yaml", "workers", 2)
    return project


STAGES = [["ingest"], ["dedup"], ["quality"]]
OUTPUTS = ["data/ingest/manifest.parquet", "data/ingest/rejects.parquet",
           "data/dedup/manifest.parquet", "data/quality/manifest.parquet"]


def test_a_local_dask_cluster_gives_the_local_pools_outputs(tmp_path: Path) -> None:
    project = _project(tmp_path)
    for stage in STAGES:
        _run(["curate", *stage], project)
    local = {rel: pd.read_parquet(project / rel) for rel in OUTPUTS}
    for rel in ["data/ingest", "data/dedup", "data/quality", "data/store", ".cache"]:
        shutil.rmtree(project / rel, ignore_errors=True)
    set_key(project / "params.yaml", "compute.engine", "dask")
    for stage in STAGES:
        out = _run(["curate", *stage], project)
        assert "Traceback" not in out
    for rel, frame in local.items():
        pd.testing.assert_frame_equal(pd.read_parquet(project / rel), frame, obj=rel)


def _profiling() -> bool:
    """On a worker: whether its statistical profiler runs."""
    from distributed import get_worker

    return "profile" in get_worker().periodic_callbacks


def test_the_local_cluster_runs_its_workers_without_the_profiler() -> None:
    from core import cluster

    try:
        executor = cluster.executor(ComputeConfig(engine="dask"), workers=2)
        assert executor.slots == 2
        assert [executor.submit(_profiling).result(timeout=60) for _ in range(4)] == [False] * 4
    finally:
        cluster.close()


def test_an_unreachable_scheduler_or_a_missing_gpu_is_one_clear_line(tmp_path: Path,
                                                                   refused_port: int) -> None:
    project = _project(tmp_path)
    _run(["curate", "ingest"], project)
    set_key(project / "params.yaml", "embeddings.device", "cuda")
    proc = subprocess.run(["curate", "dedup"], cwd=project, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    said = proc.stdout + proc.stderr
    if "on the CUDA GPU" not in said:  # this machine has no GPU (CI): a clear stop
        assert proc.returncode == 1, said
        assert "device is cuda, but torch sees no CUDA GPU" in said
        assert "Traceback" not in said
    set_key(project / "params.yaml", "embeddings.device", "auto")
    set_key(project / "params.yaml", "compute.engine", "dask")
    set_key(project / "params.yaml", "compute.connect_timeout_s", 2)
    set_key(project / "params.yaml", "compute.address", f"tcp://127.0.0.1:{refused_port}")
    proc = subprocess.run(["curate", "dedup"], cwd=project, env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said
    assert "cannot reach the Dask scheduler" in said and "Traceback" not in said
