"""How an image in the store becomes a URL Label Studio's browser can load.

Two ways (params ``tags.images.serve``):

- ``local-files``: Label Studio reads the store from its own disk. Start it with
  ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<document_root>`` (default: the project folder);
  push registers a local-files storage for the store (never synced) and each task's image is
  ``/data/local-files/?d=<store path under the document root>``. Nothing is copied and the
  database stays small (base64 data URLs would bloat it and every export).
- ``url``: any web server or bucket that serves the store folder; the task image is
  ``<url_base>/<ab>/<cd>/<id>.<ext>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from curate.tags.config import TagsImagesConfig

LOCAL_FILES_PREFIX = "/data/local-files/?d="


class ServingError(ValueError):
    """The store cannot be served the way params say; the message says what to change."""


@dataclass(frozen=True)
class ImageUrls:
    """Task image URLs for store objects, plus the storage Label Studio needs (if any)."""

    mode: str
    prefix: str  # what goes before the store-relative path
    storage_path: str | None  # local-files storage to register (absolute, as the server sees it)

    def url(self, store_path: str) -> str:
        return self.prefix + quote(store_path, safe="/")


def image_urls(cfg: TagsImagesConfig, store_root: Path) -> ImageUrls:
    """Work out the URL scheme for ``store_root`` under the configured serving mode."""
    if cfg.serve == "url":
        assert cfg.url_base is not None  # checked when params load
        return ImageUrls("url", cfg.url_base.rstrip("/") + "/", None)
    root = Path(cfg.document_root or Path.cwd()).absolute()
    store = Path(store_root)
    store = store if store.is_absolute() else Path.cwd() / store
    try:
        rel = PurePosixPath(Path(os.path.normpath(store)).relative_to(os.path.normpath(root)))
    except ValueError:
        raise ServingError(
            f"paths.store ({store}) is not inside tags.images.document_root ({root}): Label "
            "Studio only serves files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT. Set "
            "tags.images.document_root to a folder that contains the store (and start Label "
            "Studio with that root), or use tags.images.serve: url") from None
    if rel == PurePosixPath("."):
        raise ServingError("tags.images.document_root must be a parent of paths.store, not the "
                           "store itself")
    return ImageUrls("local-files", f"{LOCAL_FILES_PREFIX}{quote(str(rel), safe='/')}/",
                     str(PurePosixPath(root.as_posix()) / rel))
