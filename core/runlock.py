"""One run at a time on the same outputs: a second run refuses and names the first.

Two `curate ingest` runs writing one store, or two trainers on one run folder, would
interleave their writes and sweep each other's temporary files. Each command takes an
exclusive lock (`fcntl.flock`, released by the kernel when the process dies, so a killed run
never leaves a stale lock) on every folder it writes before touching it. The lock files live
outside the outputs (under `<paths.cache>/locks/` for curation; next to the run folder for
training) so that DVC's hashes of the outputs never see them. A refused run names the holder
(pid, host, command, start time), written into the lock file by the run that holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from core.errors import UserError


class RunLocked(UserError, RuntimeError):
    """Another run holds the outputs; the message names it and what to do."""


def lock_path(locks_dir: Path, folder: Path) -> Path:
    """The lock file of `folder` (its resolved path names it, readably and uniquely; links
    resolved, so a queued experiment's linked store shares the workspace's lock)."""
    resolved = Path(os.path.realpath(folder))
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    return Path(locks_dir) / f"{resolved.name or 'root'}-{digest}.lock"


def _holder() -> str:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
    return (f"pid {os.getpid()} on {socket.gethostname()}, `{command}`, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")


def _read_holder(fh: IO[str]) -> str:
    """Who holds the lock: it writes that right after locking, so allow it a moment."""
    for _ in range(40):
        fh.seek(0)
        text = fh.read().strip()
        if text:
            return text
        time.sleep(0.025)
    return "a process that did not say who it is"


@contextlib.contextmanager
def shared(locks_dir: Path, folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock together with any other shared holder, while no run holds it
    exclusively (or raise `RunLocked`, naming that run, at once). Stages share the per-image
    state's lock; `curate gc` takes it exclusively, so it never deletes under a running stage."""
    path = lock_path(locks_dir, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{folder} is held by another run ({_read_holder(fh)}): wait for "
                            "it to finish, or stop it, then run this again") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


@contextlib.contextmanager
def exclusive(locks_dir: Path, *folders: Path) -> Iterator[None]:
    """Hold the locks of `folders` for the block, or raise `RunLocked` at once."""
    handles = []
    try:
        for folder in sorted({Path(os.path.realpath(f)) for f in folders}):
            path = lock_path(locks_dir, folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fh)
                fh.close()
                raise RunLocked(f"{folder} is being written by another run ({holder}): wait "
                                "for it to finish, or stop it, then run this again") from None
            fh.seek(0)
            fh.truncate()
            fh.write(_holder() + "\n")
            fh.flush()
            handles.append(fh)
        yield
    finally:
        for fh in reversed(handles):
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
