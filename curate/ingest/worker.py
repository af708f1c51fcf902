"""The per-input work of ingest, run in worker processes.

Pure functions of their arguments (plus writes into the content-addressed
store, which are idempotent), so they can run anywhere an Executor sends them.
Each returns a plain-dict record: either an accepted image with its id and
`ImageInfo`, or a reject with a reason code and a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.imageio import ImageRejected, probe
from core.store import Store, content_id

Record = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """What every worker needs to accept or reject an input."""

    store_root: Path
    max_bytes: int
    max_pixels: int


def reject(source: str, uri: str, reason: str, message: str, **extra: Any) -> Record:
    return {"source": source, "source_uri": uri, "reason": reason, "message": message, **extra}


def accept_bytes(data: bytes, source: str, uri: str, limits: Limits) -> Record:
    """Hash, validate and store one input's bytes."""
    if len(data) > limits.max_bytes:
        return reject(
            source, uri, "too_large",
            f"{len(data):,} bytes, above ingest.max_file_mb ({limits.max_bytes:,} bytes)",
            bytes=len(data),
        )
    image_id = content_id(data)
    try:
        info = probe(data, limits.max_pixels)
    except ImageRejected as exc:
        return reject(source, uri, exc.reason, exc.message, bytes=len(data), sha256=image_id)
    Store(limits.store_root).put(data, image_id, info.ext)
    return {
        "source": source, "source_uri": uri, "image_id": image_id,
        "bytes": len(data), "info": info.to_dict(),
    }


def accept(task: tuple[Path | bytes, str, str, Limits]) -> Record:
    """Accept one work item: a local file path, or bytes from an archive or a URL."""
    payload, source, uri, limits = task
    if isinstance(payload, Path):
        return accept_file(payload, source, uri, limits)
    return accept_bytes(payload, source, uri, limits)


def accept_file(path: Path, source: str, uri: str, limits: Limits) -> Record:
    """Read a local file (never more than the size limit) and accept its bytes."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        return reject(source, uri, "unreadable", f"cannot read file: {exc.strerror or exc}")
    return accept_bytes(data, source, uri, limits)
