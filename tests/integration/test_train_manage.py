"""The training manager against real processes: `train manage` subprocesses supervising real
`train fit` jobs on CPU, killed with SIGKILL, stopped with SIGSTOP, sent SIGTERM; several
managers on one queue; a queue add that must refuse bad settings.

Runs are tiny (a DCGAN at 16 px, 8-image batches) so each test takes seconds to tens of
seconds on one core; most of it is the import time of each `train fit` launch."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from core.polling import until
from train.checkpoint import first_difference, newest_images
from train.cli import app
from train.queue import BOOT_ID, HOST, Manager, Queue, Request, process_started
from train.synthetic import make_blob_dataset, tiny_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: Fast watching for tests; the defaults (5 s polls, 60 s leases) suit real runs.
WAIT_S = 120.0  # for a job to start, train or stop
FAST = ["--poll-s", "0.2", "--lease-s", "5", "--backoff-s", "0.1"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("data") / "blobs.zip", 64, 16)


def _env() -> dict[str, str]:
    """The worktree's code for every subprocess, one thread each (2 cores, shared)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def _params(tmp_path: Path, **train: Any) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": tiny_config("dcgan", **train)}))
    return path


def _add(queue: Path, params: Path, data: Path, out: Path, *extra: str) -> Request:
    res = CliRunner().invoke(app, ["queue", "add", "--queue", str(queue), "--params",
                                   str(params), "--data", str(data), "--out", str(out),
                                   "--device", "cpu", "--threads", "1", *extra])
    assert res.exit_code == 0, res.output
    return Queue(queue).get(res.stdout.strip().splitlines()[-1])


def _manager(queue: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "train.cli", "manage", "--queue",
                                 str(queue), *FAST, *options], env=_env(), cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT)


def _status(queue: Path) -> dict[str, dict[str, Any]]:
    res = CliRunner().invoke(app, ["queue", "status", "--queue", str(queue), "--json"])
    assert res.exit_code == 0, res.output
    return {row["id"]: row for row in json.loads(res.stdout)}


def _running_job(queue: Path, request: Request, not_pid: int | None = None) -> int:
    """The pid of the request's current `train fit`, once it is running."""
    def pid() -> int | None:
        rec = Queue(queue).current(request.id)
        alive = rec is not None and rec.job_pid not in (None, not_pid)
        return rec.job_pid if alive else None  # type: ignore[union-attr]

    return until(pid, f"a job for {request.id}", WAIT_S)


def _images(request: Request) -> int:
    return newest_images(Path(request.out) / "checkpoints", request.config_hash) or 0


def _final_state(out: Path) -> dict[str, Any]:
    files = sorted((out / "checkpoints").glob("state-*.pt"))
    return torch.load(files[-1], weights_only=True)


def test_kill_9_twice_finishes_with_the_weights_of_an_uninterrupted_run(
        dataset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, kimg=2.048, checkpoint_kimg=0.256, tick_kimg=0.064)
    queue = tmp_path / "queue"
    request = _add(queue, params, dataset, tmp_path / "managed")
    manager = _manager(queue, tmp_path / "manager.txt", "--until-empty")
    killed = None
    for after_kimg in (0.512, 1.024):
        pid = _running_job(queue, request, not_pid=killed)
        until(lambda k=after_kimg: _images(request) >= k * 1000, f"{after_kimg} kimg", WAIT_S)
        time.sleep(0.4)  # well past the checkpoint, before the next one (256 images later)
        assert _images(request) < 2048, "the run finished before it could be killed"
        os.kill(pid, signal.SIGKILL)
        killed = pid
    assert manager.wait(timeout=300) == 0, (tmp_path / "manager.txt").read_text()
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"]) == ("done", 2), row
    assert row["kimg_done"] == row["kimg_target"] == 2.048
    log = (tmp_path / "managed" / "manager.log").read_text()
    assert log.count("killed by SIGKILL; restart") == 2, log
    assert log.count("resumed from") == 2, log

    # The same frozen params, trained without interruption by `train fit` itself.
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "train.cli", "fit", "--params", request.params,
                    "--data", str(dataset), "--out", str(straight), "--device", "cpu",
                    "--threads", "1"], env=_env(), check=True, capture_output=True)
    a, b = _final_state(straight), _final_state(tmp_path / "managed")
    assert a["images"] == b["images"] == 2048
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "ada", "rng", "progress", "sampler"):
        assert first_difference(a[key], b[key], key) is None
    exported = [torch.load(out / "export" / "generator.pt", weights_only=True)
                for out in (straight, tmp_path / "managed")]
    assert first_difference(exported[0], exported[1], "export") is None


def test_two_managers_never_run_the_same_request(dataset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, kimg=0.064)
    queue = tmp_path / "queue"
    requests = [_add(queue, params, dataset, tmp_path / f"run{i}") for i in range(3)]
    logs = [tmp_path / "manager-a.txt", tmp_path / "manager-b.txt"]
    managers = [_manager(queue, log, "--until-empty") for log in logs]
    for proc, log in zip(managers, logs, strict=True):
        assert proc.wait(timeout=300) == 0, log.read_text()
    status = _status(queue)
    ran_by: dict[str, set[str]] = {}
    for request in requests:
        assert status[request.id]["state"] == "done", status[request.id]
        records = Queue(queue).records(request.id)
        assert len(records) == 1 and records[0].restarts == 0, records  # claimed once
        launches = [line for line in (Path(request.out) / "manager.log").read_text()
                    .splitlines() if line.startswith("[manager]") and " launched pid " in line]
        assert len(launches) == 1, launches
        assert records[0].manager in launches[0]
        ran_by.setdefault(records[0].manager, set()).add(request.id)
    assert len(ran_by) == 2, f"one manager ran everything: {ran_by}"  # they did share it


def _claim_all(root: str, start: Any, end: Any, results: Any) -> None:
    queue = Queue(Path(root))
    me = Manager.this_process(lease_s=600)
    start.wait()
    claimed = []
    while (lease := queue.claim_next(me)) is not None:
        claimed.append(lease.request.id)
    results.put(claimed)
    end.wait()  # alive until all are done: a dead holder's requests are claimable again


def test_claims_are_exclusive_across_processes(dataset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    queue = tmp_path / "queue"
    ids = {_add(queue, params, dataset, tmp_path / f"run{i}").id for i in range(12)}
    ctx = multiprocessing.get_context("fork")
    n = 4
    start, end, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(queue), start, end, results))
             for _ in range(n)]
    for proc in procs:
        proc.start()
    claims = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    flat = [rid for claimed in claims for rid in claimed]
    assert sorted(flat) == sorted(ids), claims  # every request once, none twice
    assert all(len(Queue(queue).records(rid)) == 1 for rid in ids)


def test_a_lease_expires_with_its_heartbeat_or_its_machine(dataset: Path,
                                                           tmp_path: Path) -> None:
    """What another machine's manager leaves when it dies: a running record whose heartbeat
    stops (taken over after its lease time), or one from before this machine rebooted."""
    queue = Queue(tmp_path / "queue")
    request = _add(queue.root, _params(tmp_path), dataset, tmp_path / "run")
    me = Manager.this_process(lease_s=60)
    cases = [({"host": "elsewhere", "heartbeat": time.time() - 30}, False),
             ({"host": "elsewhere", "heartbeat": time.time() - 61}, True),
             ({"boot_id": "an-earlier-boot"}, True)]
    for epoch, (fields, dead) in enumerate(cases, start=1):
        record = {"epoch": epoch, "state": "running", "manager": f"m{epoch}", "host": HOST,
                  "pid": os.getpid(), "pid_started": me.pid_started, "boot_id": BOOT_ID,
                  "lease_s": 60.0, "heartbeat": time.time(), "claimed": 0.0, "restarts": 3,
                  **fields}
        path = queue.record_path(request.id, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        lease = queue.claim_next(me)
        assert (lease is not None) == dead, fields
        if lease is not None:
            assert lease.takeover and lease.takeover.startswith(f"manager m{epoch} stopped")
            assert (lease.record.epoch, lease.record.restarts) == (epoch + 1, 3)
            lease.path.unlink()  # back to the crafted record for the next case


def test_a_stalled_job_is_killed_and_restarted(dataset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, kimg=0.512, checkpoint_kimg=0.128)
    queue = tmp_path / "queue"
    request = _add(queue, params, dataset, tmp_path / "run")
    # 15 s: well over a launch's silent imports on a busy machine
    manager = _manager(queue, tmp_path / "manager.txt", "--until-empty", "--stall-s", "15")
    pid = _running_job(queue, request)
    until(lambda: _images(request) >= 128, "a checkpoint", WAIT_S)
    os.kill(pid, signal.SIGSTOP)  # hung: alive, silent, deaf to SIGTERM
    assert manager.wait(timeout=300) == 0, (tmp_path / "manager.txt").read_text()
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"]) == ("done", 1), row
    assert row["last_error"].startswith("stalled: no output and no checkpoint for 15 s (then "
                                        "killed by SIGKILL)"), row


def test_a_job_failing_past_the_restart_limit_ends_failed(dataset: Path,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "data.zip"
    data.write_bytes(dataset.read_bytes())
    queue = tmp_path / "queue"
    request = _add(queue, _params(tmp_path), data, tmp_path / "run")
    data.write_bytes(b"not a zip any more")
    manager = _manager(queue, tmp_path / "manager.txt", "--until-empty", "--max-restarts", "2")
    assert manager.wait(timeout=300) == 0, (tmp_path / "manager.txt").read_text()
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"]) == ("failed", 2), row
    assert row["last_error"].startswith("exit 1: error: "), row
    assert "not a zip archive" in row["last_error"]
    assert "gave up after 3 failure(s) in a row without a new checkpoint" in row["last_error"]
    log = (Path(request.out) / "manager.log").read_text()
    assert log.count(" launched pid ") == 3, log


def test_sigterm_hands_back_and_a_dead_manager_is_taken_over(dataset: Path,
                                                            tmp_path: Path) -> None:
    params = _params(tmp_path, kimg=1.024, checkpoint_kimg=1.0, tick_kimg=0.032)
    queue = tmp_path / "queue"
    request = _add(queue, params, dataset, tmp_path / "run")
    log = Path(request.out) / "manager.log"

    # SIGTERM: the job writes a checkpoint, the request goes back to pending, no restart.
    first = _manager(queue, tmp_path / "a.txt")
    _running_job(queue, request)
    until(lambda: log.exists() and "tick 2 " in log.read_text(), "training", WAIT_S)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "a.txt").read_text()
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"], row["job_pid"]) == ("pending", 0, None), row
    assert 0 < _images(request) < 1024  # the checkpoint written on SIGTERM
    assert "checkpoint written; run the same command again" in log.read_text()

    # kill -9 of the next manager: its job gets SIGTERM from the kernel and checkpoints...
    second = _manager(queue, tmp_path / "b.txt")
    job = _running_job(queue, request)
    seen, start = _images(request), len(log.read_text())
    until(lambda: log.read_text()[start:].count("tick ") >= 3, "training again", WAIT_S)
    second.kill()
    second.wait()
    until(lambda: process_started(job) is None, "the orphaned job to stop", timeout=60)
    assert _images(request) > seen

    # ...and a third manager takes the request over from the dead one and finishes it.
    third = _manager(queue, tmp_path / "c.txt", "--until-empty")
    assert third.wait(timeout=300) == 0, (tmp_path / "c.txt").read_text()
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"], row["kimg_done"]) == ("done", 1, 1.024), row
    records = Queue(queue).records(request.id)
    assert [r.state for r in records] == ["pending", "running", "done"]
    assert len({r.manager for r in records}) == 3
    assert records[2].last_error.startswith(f"manager {records[1].manager} stopped"), records


def test_queue_add_refuses_bad_settings(dataset: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    queue = tmp_path / "queue"
    runner = CliRunner()
    base = ["queue", "add", "--queue", str(queue), "--params", str(params), "--data",
            str(dataset), "--out", str(tmp_path / "run")]
    for extra, expected in ((["--set", "train.kimgg=5"], "unknown key 'kimgg'"),
                            (["--set", "train.dcgan.lr_g=fast"], "train.dcgan.lr_g: got 'fast'"),
                            (["--set", "train.kimg"], "expected KEY=VALUE"),
                            (["--set", "train.kimg.x=1"], "train.kimg is 0.064"),
                            (["--gpus", "0"], "--gpus"),
                            (["--data", str(tmp_path / "nope.zip")], "dataset not found")):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert expected in " ".join(res.output.split()), (extra, res.output)
    assert Queue(queue).requests() == []
    request = _add(queue, params, dataset, tmp_path / "run", "--set", "train.kimg=0.1",
                   "--set", "train.dcgan.lr_g=1e-3")
    frozen = yaml.safe_load(Path(request.params).read_text())["train"]
    assert request.kimg == frozen["kimg"] == 0.1 and frozen["dcgan"]["lr_g"] == 1e-3
    res = runner.invoke(app, base)  # a second request into the same run folder
    assert res.exit_code == 2 and "already trains into" in " ".join(res.output.split())


def test_cancel_a_pending_and_a_running_request(dataset: Path, tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    params = _params(tmp_path, kimg=100.0, checkpoint_kimg=100.0, tick_kimg=0.032)
    waiting = _add(queue, params, dataset, tmp_path / "waiting")
    runner = CliRunner()
    res = runner.invoke(app, ["queue", "cancel", waiting.id[:4], "--queue", str(queue)])
    assert res.exit_code == 0, res.output
    assert _status(queue)[waiting.id]["state"] == "cancelled"
    res = runner.invoke(app, ["queue", "cancel", waiting.id, "--queue", str(queue)])
    assert res.exit_code == 1 and "already cancelled" in res.output
    res = runner.invoke(app, ["queue", "cancel", "ffffffff", "--queue", str(queue)])
    assert res.exit_code == 2 and "no request" in res.output

    running = _add(queue, params, dataset, tmp_path / "running")
    manager = _manager(queue, tmp_path / "manager.txt", "--until-empty")
    _running_job(queue, running)
    log = Path(running.out) / "manager.log"
    until(lambda: "tick 2 " in log.read_text(), "training", WAIT_S)
    res = runner.invoke(app, ["queue", "cancel", running.id, "--queue", str(queue)])
    assert res.exit_code == 0 and "stops the job" in res.output, res.output
    assert manager.wait(timeout=120) == 0, (tmp_path / "manager.txt").read_text()
    assert "checkpoint written; run the same command again" in log.read_text()
    status = _status(queue)
    assert status[running.id]["state"] == "cancelled" and _images(running) > 0
    assert not Queue(queue).records(waiting.id)  # never claimed
    res = runner.invoke(app, ["queue", "status", "--queue", str(queue)])
    assert res.exit_code == 0 and res.output.count("cancelled") == 2, res.output


@pytest.mark.slow
def test_a_killed_torchrun_job_leaves_no_workers_behind(dataset: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The several-GPU path, on CPU: a request for 2 GPUs on a machine said to have 2 runs
    under torchrun (gloo here). torchrun's workers live in sessions of their own: killed with
    SIGKILL, torchrun leaves them training on, holding the run lock; the manager kills them
    before it relaunches."""
    import contextlib
    import threading

    import psutil

    from train import manage

    monkeypatch.setattr(manage, "visible_gpus", lambda: 2)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in _env().items():
        monkeypatch.setenv(var, value)
    queue = tmp_path / "queue"
    params = _params(tmp_path, kimg=1.024, checkpoint_kimg=0.128, tick_kimg=0.032)
    request = _add(queue, params, dataset, tmp_path / "run", "--gpus", "2")
    workers: list[psutil.Process] = []
    alive_at_relaunch: list[psutil.Process] = []
    errors: list[BaseException] = []

    def alive(proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        return False

    def kill_torchrun() -> None:
        try:
            pid = _running_job(queue, request)
            until(lambda: _images(request) >= 128, "a checkpoint", timeout=240)
            workers.extend(psutil.Process(pid).children(recursive=True))
            os.kill(pid, signal.SIGKILL)
            _running_job(queue, request, not_pid=pid)
            alive_at_relaunch.extend(w for w in workers if alive(w))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(exc)

    killer = threading.Thread(target=kill_torchrun)
    killer.start()
    lines: list[str] = []
    policy = manage.Policy(poll_s=0.2, lease_s=5, backoff_s=0.1)
    code = manage.Supervisor(Queue(queue), policy, lines.append).run(until_empty=True)
    killer.join()
    assert not errors, errors
    assert code == 0, lines
    assert len(workers) >= 2 and not alive_at_relaunch, (workers, alive_at_relaunch)
    row = _status(queue)[request.id]
    assert (row["state"], row["restarts"], row["kimg_done"]) == ("done", 1, 1.024), row
    log = (Path(request.out) / "manager.log").read_text()
    assert log.count("torch.distributed.run --standalone --nproc-per-node=2") == 2, log
    assert "on 2 cpu process(es)" in log
