"""`train manage`: a supervisor that runs the requests of a training queue (train/queue.py).

Why it exists: a long GAN run on interruptible machines dies many times before it reaches its
kimg (preempted instance, rebooted host, a NaN, a hung collective). `train fit` already resumes
bit for bit from its newest checkpoint; the manager supplies the rest: it claims the oldest
waiting request, runs `train fit` on it (under torchrun when the request asks for several GPUs
and they are here), and watches it:

- exit 0: done. Exit 2 (the params no longer validate, e.g. after a code change): failed at
  once, a restart cannot help.
- any other exit, a signal, or a stall (no new output line and no new checkpoint for
  `stall_s`: SIGTERM, then SIGKILL): relaunched after a backoff, and `train fit` continues
  from the last checkpoint with the remaining kimg. The backoff doubles with each failure in a
  row that brought no new checkpoint; after `max_restarts` of those the request is failed with
  the reason. A launch that got further resets both.
- the lease: refreshed every poll; a request whose manager died is taken over by another
  manager (counted as a restart). A manager that finds its lease taken stops its job.
- SIGTERM/SIGINT to the manager: SIGTERM to the job (it writes a checkpoint), then the request
  goes back to pending for any manager. `train queue cancel` stops the job the same way.

The job's output and the manager's decisions go to OUT/manager.log. The job runs in its own
session (a Ctrl-C at the manager's terminal reaches the manager, which stops the job cleanly)
and, on Linux, is sent SIGTERM if the manager dies, so it never trains on unsupervised.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from train.queue import Lease, Manager, Queue, Request

Log = Callable[[str], None]
Outcome = Literal["exit", "stall", "stop", "cancel", "lost"]

#: Longest wait between two launches of a failing job.
MAX_BACKOFF_S = 600.0
#: How long a job gets to write its checkpoint and exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class Policy:
    """How the manager watches and restarts jobs (the `train manage` options)."""

    max_restarts: int = 5
    backoff_s: float = 10.0
    stall_s: float = 1800.0
    poll_s: float = 5.0
    lease_s: float = 60.0

    def problem(self) -> str | None:
        """What is wrong with these settings, or None."""
        if self.max_restarts < 0 or self.backoff_s < 0:
            return "--max-restarts and --backoff-s must be >= 0"
        if self.poll_s <= 0 or self.stall_s <= 0:
            return "--poll-s and --stall-s must be > 0"
        if self.lease_s < 3 * self.poll_s:
            return (f"--lease-s {self.lease_s:g} is under 3 x --poll-s {self.poll_s:g}: a busy "
                    f"but healthy manager would be taken for dead")
        return None


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def fit_command(request: Request, gpus_here: int) -> list[str]:
    """`train fit` for `request`: under torchrun with min(asked, visible) GPUs when over one.

    The interpreter is this one, as a module (`-m train.cli`), so the job runs the same code
    as the manager whatever PATH holds."""
    args = ["fit", "--params", request.params, "--data", request.data, "--out", request.out]
    if request.device:
        args += ["--device", request.device]
    if request.threads:
        args += ["--threads", str(request.threads)]
    nproc = min(request.gpus, gpus_here)
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", "-m", "train.cli", *args]
    return [sys.executable, "-m", "train.cli", *args]


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel send the job SIGTERM when the manager dies (Linux
    prctl PR_SET_PDEATHSIG), so a job never trains on unsupervised. Bound here, in the parent:
    the child only calls it."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the manager died before the hook ran
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code > 128 and code - 128 in {s.value for s in signal.Signals}:
        return f"stopped by {signal.Signals(code - 128).name} (exit {code})"
    return f"exit {code}"


def without_ignored_exceptions(lines: list[str]) -> list[str]:
    """`lines` less Python's "Exception ignored in" reports: a library's __del__ failing as
    the interpreter shuts down (dulwich's, after dvclive) prints them after the traceback
    that ended the job, and the last of them would stand in for the job's error. A report
    is its header, the traceback's indented lines, and the exception line after them."""
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("Exception ignored in"):
            skipping = True
        elif skipping and (line.startswith((" ", "Traceback (most recent call last)"))
                           or not line):
            continue
        elif skipping:
            skipping = False  # this line is the ignored exception itself
        else:
            kept.append(line)
    return kept


class Job:
    """One launch of `train fit`, its output appended to the run's manager.log."""

    def __init__(self, command: list[str], workdir: str, log_path: Path) -> None:
        import psutil

        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log_start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=workdir if Path(workdir).is_dir() else None,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent())  # noqa: PLW1509 (the manager has one thread)
        self.pid = self.proc.pid
        self.tree: list[psutil.Process] = []
        self._snapshot()

    def _snapshot(self) -> None:
        """Remember the job's process tree (torchrun's workers live in sessions of their own
        and outlive a killed torchrun: they are found again here)."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            self.tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            pass

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is None:
            self._snapshot()
        else:
            self._kill_leftovers()
        return code

    def terminate(self) -> None:
        """Ask the job to checkpoint and exit (torchrun forwards SIGTERM to its workers)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._kill_leftovers()
        self.proc.wait()

    def _kill_leftovers(self) -> None:
        import psutil

        for proc in self.tree:
            try:
                if proc.is_running():  # same pid and start time: not a reused pid
                    proc.kill()
            except psutil.Error:
                pass

    def progress(self, lease: Lease) -> tuple[int, int | None]:
        """Changes while the job makes progress: its output size, its newest checkpoint."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            size = -1
        return size, lease.images()

    def reason(self, code: int) -> str:
        """Why the job ended, with its last error line when it printed one."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(self.log_start, fh.seek(0, 2) - 65536))  # past shutdown noise
                text = fh.read().decode(errors="replace")
        except OSError:
            text = ""
        lines = [ln.strip() for ln in without_ignored_exceptions(text.splitlines())]
        lines = [ln for ln in lines if ln and not ln.startswith("[manager]")]
        # `error: ...` (train fit's message, wrapped by rich over several lines), else the last
        # line (a traceback's exception)
        starts = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
        detail = " ".join(lines[starts[-1]:] if starts else lines[-1:])[:300]
        return describe_exit(code) + (f": {detail}" if detail and code > 0 else "")


class Supervisor:
    """Claims requests from `queue` and runs them, one at a time (see the module doc)."""

    def __init__(self, queue: Queue, policy: Policy, log: Log) -> None:
        self.queue, self.policy, self.console = queue, policy, log
        self.manager = Manager.this_process(policy.lease_s)
        self.signals: list[int] = []
        self._gpus: int | None = None

    # ---------------------------------------------------------------- the loop

    def run(self, once: bool = False, until_empty: bool = False) -> int:
        """Serve the queue; return the exit status (128+N after signal N, else 0)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.console(f"manager {self.manager.id} serving {self.queue.root}")
            while not self.signals:
                try:
                    lease = self.queue.claim_next(self.manager)
                except OSError as exc:  # a shared file system's hiccup: try again
                    self.console(f"cannot read the queue ({exc}); retrying")
                    self._wait(self.policy.poll_s)
                    continue
                if lease is None:
                    if once or until_empty:
                        break
                    self._wait(self.policy.poll_s)
                    continue
                self.supervise(lease)
                if once:
                    break
            return 128 + self.signals[0] if self.signals else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.console(f"{signal.Signals(signum).name}: stopping the job (it writes a checkpoint) "
                     f"and handing its request back to the queue"
                     + ("; again: killing it" if len(self.signals) > 1 else ""))

    def _wait(self, seconds: float, lease: Lease | None = None) -> None:
        """Sleep, heartbeating `lease` every poll; end early on a signal, a cancel or a lost
        lease (the caller checks which)."""
        end, beat = time.monotonic() + seconds, 0.0
        while (now := time.monotonic()) < end and not self.signals:
            if lease is not None and now - beat >= self.policy.poll_s:
                beat = now
                if not self._beat(lease) or self.queue.cancel_requested(lease.request.id):
                    return
            time.sleep(min(0.25, end - now))

    def _beat(self, lease: Lease) -> bool:
        """Heartbeat; False when the lease was taken over. A write that fails (the shared file
        system is away) counts as held: if it stays away past the lease time, another manager
        takes over and this one learns it when the file system is back."""
        try:
            return lease.update()
        except OSError as exc:
            self.console(f"{lease.request.id}: heartbeat not written ({exc})")
            return True

    def _say(self, lease: Lease, message: str) -> None:
        """To the console and to the run's manager.log (prefixed, so never read as the job's)."""
        line = f"{lease.request.id} {lease.request.name}: {message}"
        self.console(line)
        log = Path(lease.request.out) / "manager.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"[manager] {time.strftime('%Y-%m-%d %H:%M:%S')} {self.manager.id} "
                     f"{message}\n")

    # ---------------------------------------------------------------- one request

    def supervise(self, lease: Lease) -> None:
        """Run `lease`'s request until done, failed, cancelled, handed back or taken over."""
        request = lease.request
        self._say(lease, f"claimed (epoch {lease.record.epoch}), target {request.kimg:g} kimg")
        if lease.takeover and not self._after_failure(lease, lease.takeover):
            return
        while True:
            if self.signals:
                self._hand_back(lease)
                return
            if not lease.held():
                self._say(lease, "lease taken over by another manager; leaving it")
                return
            if self.queue.cancel_requested(request.id):
                lease.finish("cancelled")
                self._say(lease, "cancelled")
                return
            job = self._launch(lease)
            outcome, code = self._watch(lease, job)
            if outcome == "lost":
                self._say(lease, f"lease taken over by another manager; job stopped "
                                 f"({describe_exit(code)})")
                return
            if code == 0:
                lease.finish("done", strikes=0)
                self._say(lease, f"done: {(lease.images() or 0) / 1000:g} kimg "
                                 f"(restarts: {lease.record.restarts})")
                return
            if outcome == "stop":
                self._hand_back(lease)
                return
            if outcome == "cancel":
                lease.finish("cancelled")
                self._say(lease, f"cancelled; job stopped ({describe_exit(code)})")
                return
            if outcome == "stall":
                reason = (f"stalled: no output and no checkpoint for {self.policy.stall_s:g} s "
                          f"(then {describe_exit(code)})")
            else:
                reason = job.reason(code)
            if code == 2:
                lease.finish("failed", last_error=f"{reason} (bad params: not restarted)")
                self._say(lease, f"failed: {reason}; fix the params and add it again")
                return
            if not self._after_failure(lease, reason):
                return

    def _launch(self, lease: Lease) -> Job:
        request = lease.request
        if request.gpus > 1 and self._gpus is None:
            self._gpus = visible_gpus()
        command = fit_command(request, self._gpus or 0)
        if request.gpus > 1 and (self._gpus or 0) < request.gpus:
            self._say(lease, f"asked for {request.gpus} GPUs, {self._gpus or 0} visible: "
                             f"running with {max(1, min(request.gpus, self._gpus or 0))} "
                             f"(same global batch, same trajectory)")
        job = Job(command, request.workdir, Path(request.out) / "manager.log")
        lease.update(durable=True, job_pid=job.pid)
        kimg = (lease.images() or 0) / 1000
        self._say(lease, f"launched pid {job.pid} at {kimg:g} kimg: {' '.join(command)}")
        return job

    def _watch(self, lease: Lease, job: Job) -> tuple[Outcome, int]:
        """Until the job exits; on a signal, a cancel, a lost lease or a stall, SIGTERM it and
        SIGKILL it after a grace period (for a stall at most `stall_s`: a hung job will not
        checkpoint)."""
        outcome: Outcome = "exit"
        kill_at: float | None = None
        seen = job.progress(lease)
        last_change = time.monotonic()
        while (code := job.poll()) is None:
            now = time.monotonic()
            held = self._beat(lease)
            if kill_at is not None and (now >= kill_at or len(self.signals) > 1):
                job.kill()
                continue
            if kill_at is None:
                current = job.progress(lease)
                if current != seen:
                    seen, last_change = current, now
                chosen: Outcome | None = (
                    "stop" if self.signals else "lost" if not held
                    else "cancel" if self.queue.cancel_requested(lease.request.id)
                    else "stall" if now - last_change > self.policy.stall_s else None)
                if chosen is not None:
                    outcome = chosen
                    grace = min(STOP_GRACE_S, self.policy.stall_s) if chosen == "stall" \
                        else STOP_GRACE_S
                    kill_at = now + grace
                    job.terminate()
            time.sleep(self.policy.poll_s if kill_at is None
                       else min(self.policy.poll_s, max(0.05, kill_at - now)))
        return outcome, code

    def _after_failure(self, lease: Lease, reason: str) -> bool:
        """Count a failure; wait out the backoff and return True to relaunch, or record the
        request failed (past the restart limit) and return False."""
        rec, images = lease.record, lease.images()
        mark = -1 if images is None else images
        strikes = 1 if rec.mark is None or mark > rec.mark else rec.strikes + 1
        if strikes > self.policy.max_restarts:
            lease.finish("failed", strikes=strikes, mark=mark,
                         last_error=f"{reason}; gave up after {strikes} failure(s) in a row "
                                    f"without a new checkpoint (--max-restarts "
                                    f"{self.policy.max_restarts})")
            self._say(lease, f"failed: {lease.record.last_error}")
            return False
        backoff = min(self.policy.backoff_s * 2 ** (strikes - 1), MAX_BACKOFF_S)
        lease.update(durable=True, restarts=rec.restarts + 1, strikes=strikes, mark=mark,
                     last_error=reason, job_pid=None)
        self._say(lease, f"{reason}; restart {lease.record.restarts} in {backoff:g} s from "
                         f"{(images or 0) / 1000:g} kimg (failure {strikes} of at most "
                         f"{self.policy.max_restarts} in a row without a new checkpoint)")
        self._wait(backoff, lease)
        return True

    def _hand_back(self, lease: Lease) -> None:
        if lease.finish("pending", finished=None):
            self._say(lease, f"handed back to the queue at {(lease.images() or 0) / 1000:g} "
                             f"kimg (another manager, or this one restarted, continues it)")
