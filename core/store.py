"""Content-addressed image store.

An image's id is the sha256 of its original bytes; the bytes live once under
`<root>/ab/cd/<id>.<ext>`. Nothing downstream refers to a user's path, so the
same photo found in a folder, an archive and at a URL is stored once, and a
re-ingest of unchanged data writes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core import atomic


def content_id(data: bytes) -> str:
    """The image id: hex sha256 of the original file bytes."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (model weights are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Bytes addressed by content id, fanned out over two folder levels."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        #: Where writes are staged before their rename: the one folder `sweep` has to look in.
        self.tmp_dir = self.root / ".tmp"

    @staticmethod
    def staging_dir(path: Path) -> Path:
        """The `tmp_dir` of the store holding `path` (one of its objects, `<root>/ab/cd/<name>`),
        for writers that are handed the object's path only."""
        return Path(path).parents[2] / ".tmp"

    def relpath(self, image_id: str, ext: str) -> str:
        """Path of an image relative to the store root (what manifests record)."""
        return f"{image_id[:2]}/{image_id[2:4]}/{image_id}.{ext}"

    def path(self, image_id: str, ext: str) -> Path:
        return self.root / self.relpath(image_id, ext)

    def has(self, image_id: str, ext: str, size: int | None = None) -> bool:
        """True when the object exists (and has `size` bytes when given)."""
        path = self.path(image_id, ext)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return False
        return size is None or actual == size

    def put(self, data: bytes, image_id: str, ext: str) -> Path:
        """Store `data` under its id unless an intact copy is already there.

        Not fsync'd (see `atomic.write_bytes`): every reuse goes through `has` with the size the
        cache recorded, so a file a power cut left short is fetched or read again.
        """
        path = self.path(image_id, ext)
        if not self.has(image_id, ext, len(data)):
            atomic.write_bytes(path, data, durable=False, tmp_dir=self.tmp_dir)
        return path

    def read(self, image_id: str, ext: str) -> bytes:
        return self.path(image_id, ext).read_bytes()

    def sweep(self) -> int:
        """Remove temporary files left by a killed writer."""
        return atomic.sweep_temp_files(self.tmp_dir)
