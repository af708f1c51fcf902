"""A persistent queue of training requests in a folder, shared by managers on many machines.

`train queue add` writes a request; `train manage` (train/manage.py) claims and runs requests;
`train queue status` and `train queue cancel` read and flag them. Everything is plain files, so
a queue on a shared file system (NFS and the like) serves managers on every machine that
mounts it, and a queue survives any process or machine dying:

    QUEUE/requests/ID.json           the request, immutable once written (atomic rename)
    QUEUE/requests/ID.params.yaml    its frozen params.yaml (overrides applied, validated)
    QUEUE/leases/ID/NNNNNN.json      one record per claim ("epoch"); the highest is current
    QUEUE/cancel/ID                  written by `queue cancel`

Why epochs: a claim is the exclusive creation of the next epoch's file (`os.link` of a fully
written temporary file, which fails if the name exists, atomic on local file systems and NFS),
so of several managers claiming one request at once exactly one succeeds. Only the manager
that created an epoch file ever rewrites it (its heartbeat, the job's pid, restarts, the final
state), so records never have two writers. A manager whose heartbeat is older than its
declared lease time (or that is gone from this host, or whose host rebooted) has lost the
request: another manager claims the next epoch and continues from the run's checkpoints. A
manager that finds a higher epoch than its own has been superseded and stops its job. What
keeps the two jobs of such a hand-over off one run folder meanwhile is `train fit`'s own run
lock on the folder.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from core import atomic
from core.errors import ParamsError, UserError

State = Literal["pending", "running", "done", "failed", "cancelled"]
TERMINAL = ("done", "failed", "cancelled")
HOST = socket.gethostname()
_EPOCH = re.compile(r"^(\d{6,})\.json$")
_ID = re.compile(r"^[0-9a-f]{8}$")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class QueueError(ParamsError, RuntimeError):
    """A bad request or a bad reference to one (exit 2); the message says what to do."""


class UnknownRequest(QueueError):
    """No request (or several) has the id given."""


def _boot_id() -> str:
    """Changes when the machine restarts: a record from an earlier boot is dead at once."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()


def process_started(pid: int) -> float | None:
    """Start time of process `pid`, or None when there is no such live process. A pid and its
    start time name a process for good (pids are reused, start times are not)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Request:
    """What to train, fixed when added: the manager runs exactly this."""

    id: str
    name: str
    data: str              # dataset zip, absolute
    out: str               # run folder, absolute
    params: str            # frozen params.yaml, absolute
    kimg: float            # the target (train.kimg of the frozen params)
    config_hash: str       # dynamics hash: finds this run's checkpoints
    gpus: int
    device: str | None
    threads: int | None
    workdir: str           # the job runs here (relative paths in params mean what they did)
    created: float
    added_on: str


@dataclass(frozen=True)
class Record:
    """One claim of a request (one epoch): who holds it and what has happened so far.

    `restarts` counts every relaunch after a failure or after taking over from a dead manager;
    `strikes` counts the failures in a row that came without a new checkpoint, and is what the
    restart limit applies to, so a run on a machine that keeps being interrupted goes on as long
    as each launch gets further, while a run that fails at the same place gives up.
    """

    epoch: int
    state: State
    manager: str
    host: str
    pid: int
    pid_started: float
    boot_id: str
    lease_s: float
    heartbeat: float
    claimed: float
    job_pid: int | None = None
    restarts: int = 0
    strikes: int = 0
    mark: int | None = None        # checkpoint images at the last failure
    last_error: str | None = None
    finished: float | None = None

    def alive(self, now: float | None = None) -> bool:
        """Whether the holder of a running record may still be running it."""
        if self.state != "running":
            return False
        if self.host == HOST and self.boot_id and BOOT_ID:
            if self.boot_id != BOOT_ID:
                return False  # this machine restarted since
            started = process_started(self.pid)
            if started is None or abs(started - self.pid_started) > 1.0:
                return False  # the manager process is gone
        return (time.time() if now is None else now) - self.heartbeat <= self.lease_s


@dataclass(frozen=True)
class Manager:
    """The identity a manager writes into the records it holds."""

    id: str
    pid: int
    pid_started: float
    lease_s: float

    @classmethod
    def this_process(cls, lease_s: float) -> Manager:
        pid = os.getpid()
        return cls(f"{HOST}:{pid}:{uuid.uuid4().hex[:6]}", pid, process_started(pid) or 0.0,
                   lease_s)


@dataclass(frozen=True)
class View:
    """A request as `queue status` shows it."""

    request: Request
    state: State
    kimg_done: float
    record: Record | None

    def as_json(self) -> dict[str, Any]:
        rec = self.record
        return {"id": self.request.id, "name": self.request.name, "state": self.state,
                "kimg_done": self.kimg_done, "kimg_target": self.request.kimg,
                "restarts": rec.restarts if rec else 0,
                "manager": rec.manager if rec else None, "host": rec.host if rec else None,
                "job_pid": rec.job_pid if rec and self.state == "running" else None,
                "last_error": rec.last_error if rec else None,
                "data": self.request.data, "out": self.request.out, "gpus": self.request.gpus,
                "created": self.request.created}


def _write_new(target: Path, text: str) -> bool:
    """Create `target` holding `text`, only if it does not exist; False if it did.

    The text is written and fsync'd under a temporary name first and then hard-linked: readers
    never see a half-written record, and a claimer that dies leaves only a temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}{atomic.TEMP_MARKER}")
    try:
        os.fchmod(fd, atomic.FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def set_key(mapping: dict[str, Any], assignment: str) -> None:
    """Apply one `--set dotted.key=VALUE` (VALUE read as YAML) to `mapping` in place."""
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise QueueError(f"--set {assignment!r}: expected KEY=VALUE with a dotted key, e.g. "
                         f"--set train.kimg=200")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise QueueError(f"--set {assignment!r}: the value is not valid YAML ({exc})") from None
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; people mean 0.001
    node = mapping
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise QueueError(f"--set {key}: {'.'.join(parts[:depth + 1])} is {child!r}, not a "
                             f"section with keys")
        node = child
    node[parts[-1]] = value


class Queue:
    """The queue folder (see the module docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests_dir = self.root / "requests"
        self.leases_dir = self.root / "leases"
        self.cancel_dir = self.root / "cancel"

    # ---------------------------------------------------------------- requests

    def add(self, *, params: Path, overrides: list[str], data: Path | None, out: Path | None,
            dist: str | None, name: str | None, kimg: float | None, gpus: int,
            device: str | None, threads: int | None) -> Request:
        """Validate and write a request; raise QueueError (or ConfigError) on anything wrong.

        The params are frozen now: editing params.yaml later does not change a queued run, and
        a bad `--set` fails here, not hours later on some machine."""
        from core.config import ConfigError
        from train.config import train_section

        if not Path(params).exists():
            raise QueueError(f"{params} not found: run from the project root or pass --params")
        try:
            mapping = yaml.safe_load(Path(params).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise QueueError(f"{params} is not valid YAML: {exc}") from None
        mapping = copy.deepcopy(mapping)
        for assignment in overrides + ([f"train.kimg={kimg}"] if kimg is not None else []):
            set_key(mapping, assignment)
        try:
            train, paths = train_section(mapping)
        except ConfigError as exc:
            shown = " ".join(f"--set {o}" for o in overrides)
            raise ConfigError(f"{params}{' with ' + shown if shown else ''}: {exc}") from None
        if dist is not None:
            data = data or paths.data / "datasets" / f"{dist}.zip"
            out = out or Path("models") / dist
        if data is None or out is None:
            raise QueueError("pass --data PATH and --out DIR, or --dist NAME")
        if not Path(data).is_file():
            raise QueueError(f"{data}: dataset not found; build it with `curate prepare --dist "
                             f"NAME` (or pass --data to an existing StyleGAN-format zip)")
        if gpus < 1 or (threads is not None and threads < 1):
            raise QueueError("--gpus and --threads must be at least 1")
        out = Path(os.path.abspath(out))
        for view in self.views():
            if view.state not in TERMINAL and Path(view.request.out) == out:
                raise QueueError(f"request {view.request.id} ({view.state}) already trains into "
                                 f"{out}: cancel it first (`train queue cancel "
                                 f"{view.request.id}`) or pick another --out")
        rid = uuid.uuid4().hex[:8]
        frozen = self.requests_dir / f"{rid}.params.yaml"
        request = Request(
            id=rid, name=name or dist or out.name, data=os.path.abspath(data), out=str(out),
            params=str(frozen.absolute()), kimg=train.kimg,
            config_hash=train.dynamics_hash(), gpus=gpus, device=device, threads=threads,
            workdir=os.getcwd(), created=time.time(), added_on=HOST)
        atomic.write_text(frozen, yaml.safe_dump(mapping, sort_keys=False))
        atomic.write_text(self.requests_dir / f"{rid}.json",  # the commit point
                          json.dumps(dataclasses.asdict(request), indent=1))
        return request

    def requests(self) -> list[Request]:
        """Every readable request, oldest first (files being written are skipped)."""
        found = []
        for path in self.requests_dir.glob("*.json") if self.requests_dir.is_dir() else []:
            if not _ID.match(path.stem):
                continue
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.append(Request(**json.loads(path.read_text(encoding="utf-8"))))
        return sorted(found, key=lambda r: (r.created, r.id))

    def get(self, ref: str) -> Request:
        """The request whose id is `ref` or starts with it."""
        matches = [r for r in self.requests() if r.id.startswith(ref)] if ref else []
        if len(matches) != 1:
            what = "no request" if not matches else f"{len(matches)} requests"
            raise UnknownRequest(f"{what} in {self.root} with id {ref!r}: see `train queue status "
                             f"--queue {self.root}`")
        return matches[0]

    # ---------------------------------------------------------------- records

    def _epochs(self, rid: str) -> list[int]:
        try:
            names = os.listdir(self.leases_dir / rid)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_EPOCH.match, names) if m)

    def record_path(self, rid: str, epoch: int) -> Path:
        return self.leases_dir / rid / f"{epoch:06d}.json"

    def records(self, rid: str) -> list[Record]:
        """Every claim of request `rid`, oldest first (the history of who ran it)."""
        return [Record(**json.loads(self.record_path(rid, e).read_text(encoding="utf-8")))
                for e in self._epochs(rid)]

    def current(self, rid: str) -> Record | None:
        epochs = self._epochs(rid)
        if not epochs:
            return None
        text = self.record_path(rid, epochs[-1]).read_text(encoding="utf-8")
        return Record(**json.loads(text))

    def cancel_requested(self, rid: str) -> bool:
        return (self.cancel_dir / rid).exists()

    def cancel(self, ref: str) -> tuple[Request, State]:
        """Flag a request as cancelled; a manager running it stops the job (a checkpoint is
        written) and records it. Returns the request and its state before."""
        request = self.get(ref)
        state = self.view(request).state
        if state in TERMINAL:
            raise UserError(f"request {request.id} is already {state}: nothing to cancel")
        atomic.write_text(self.cancel_dir / request.id,
                          f"cancelled on {HOST} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return request, state

    def view(self, request: Request) -> View:
        rec = self.current(request.id)
        images = _newest_images(Path(request.out), request.config_hash)
        cancelled = self.cancel_requested(request.id)
        if rec is not None and (rec.state in TERMINAL or rec.alive()):
            state: State = rec.state
        else:  # never claimed, released, or its manager died: a manager will (re)claim it
            state = "cancelled" if cancelled else "pending"
        return View(request, state, (images or 0) / 1000, rec)

    def views(self) -> list[View]:
        return [self.view(r) for r in self.requests()]

    # ---------------------------------------------------------------- claims

    def claim_next(self, manager: Manager) -> Lease | None:
        """Claim the oldest request that nobody is running; None when there is none.

        Claimable: never claimed, released by a stopping manager, or held by a manager that
        died (a takeover: the lease's `takeover` says whose)."""
        for request in self.requests():
            if self.cancel_requested(request.id):
                continue
            rec = self.current(request.id)
            if rec is not None and (rec.state in TERMINAL or rec.alive()):
                continue
            lease = self._claim(request, rec, manager)
            if lease is not None:
                return lease
        return None

    def _claim(self, request: Request, prev: Record | None, manager: Manager) -> Lease | None:
        now = time.time()
        takeover = None
        if prev is not None and prev.state == "running":
            age = now - prev.heartbeat
            takeover = (f"manager {prev.manager} stopped (last heartbeat {age:.0f} s ago"
                        f"{', its process is gone' if prev.host == HOST else ''})")
        carried = {k: getattr(prev, k) for k in ("restarts", "strikes", "mark", "last_error")
                   } if prev is not None else {}
        record = Record(
            epoch=(prev.epoch if prev else 0) + 1, state="running", manager=manager.id,
            host=HOST, pid=manager.pid, pid_started=manager.pid_started, boot_id=BOOT_ID,
            lease_s=manager.lease_s, heartbeat=now, claimed=now, **carried)
        target = self.record_path(request.id, record.epoch)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _write_new(target, json.dumps(dataclasses.asdict(record), indent=1)):
            return None  # another manager claimed it first
        return Lease(self, request, record, takeover)


def _newest_images(out: Path, config_hash: str) -> int | None:
    from train.checkpoint import newest_images

    return newest_images(out / "checkpoints", config_hash)


class Lease:
    """A claim this manager holds: the only writer of its record."""

    def __init__(self, queue: Queue, request: Request, record: Record,
                 takeover: str | None) -> None:
        self.queue, self.request, self.record = queue, request, record
        self.takeover = takeover
        self.path = queue.record_path(request.id, record.epoch)

    def held(self) -> bool:
        """False once another manager has claimed a later epoch (this one was presumed dead)."""
        epochs = self.queue._epochs(self.request.id)
        return bool(epochs) and epochs[-1] == self.record.epoch

    def update(self, durable: bool = False, **changes: Any) -> bool:
        """Heartbeat, with `changes` to the record; False if the lease is no longer held (then
        nothing is written)."""
        if not self.held():
            return False
        self.record = dataclasses.replace(self.record, heartbeat=time.time(), **changes)
        atomic.write_bytes(self.path, json.dumps(dataclasses.asdict(self.record),
                                                 indent=1).encode(), durable=durable)
        return True

    def finish(self, state: State, **changes: Any) -> bool:
        """Record a final state (done/failed/cancelled), or `pending` to hand the request back."""
        return self.update(durable=True, state=state,
                           **{"job_pid": None, "finished": time.time(), **changes})

    def images(self) -> int | None:
        """Images seen at the run's newest checkpoint."""
        return _newest_images(Path(self.request.out), self.request.config_hash)
