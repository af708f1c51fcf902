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


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}{TEMP_MARKER}", suffix=target.suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically (fsync'd, so a crash cannot expose a short file)."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
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
