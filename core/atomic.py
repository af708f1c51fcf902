"""Atomic file writes.

Every output of the pipeline is written to a temporary file in the destination
folder and then renamed over the target, so a stage killed at any instant leaves
either the old file or the new one, never a half-written one. Temporary names
carry a fixed marker so a later run can sweep leftovers of a killed run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".tmp-"


def _file_mode() -> int:
    """What `open()` would give a new file under this process's umask (mkstemp gives 0600,
    which would make every report and dataset unreadable to the rest of a team)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(target: Path, tmp_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path; rename it onto `target` on success.

    The temporary file lives next to `target`, or in `tmp_dir` (same file system) when a big
    tree would rather sweep one folder than search all of its own for leftovers. Folders are
    made only when missing: a stage writing thousands of files into existing folders should
    not pay a failing mkdir per file.
    """
    target = Path(target)
    folder = Path(tmp_dir) if tmp_dir is not None else target.parent
    prefix = f".{target.name}{TEMP_MARKER}"
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=target.suffix)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=target.suffix)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes, durable: bool = True,
                tmp_dir: Path | None = None) -> None:
    """Write `data` to `target` atomically.

    `durable` fsyncs before the rename, so even a power cut cannot expose a short file. Per-image
    outputs that a cache points at pass `durable=False`: a rename is still atomic for every
    process (a killed stage leaves the old file or the new one), the fsync would cost more than
    writing the image, and their readers check the recorded size, so the rare file a power cut
    truncates is redone, not trusted.
    """
    with atomic_path(target, tmp_dir) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())


def write_text(target: Path, text: str) -> None:
    """Write UTF-8 `text` to `target` atomically."""
    write_bytes(target, text.encode("utf-8"))


def sweep_temp_files(root: Path) -> int:
    """Delete temporary files a killed run left under `root`; return how many."""
    if not root.exists():
        return 0
    removed = 0
    for path in root.rglob(f"*{TEMP_MARKER}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
