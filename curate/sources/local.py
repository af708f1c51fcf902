"""Enumerate files in folders and members of zip/tar archives, safely.

Archive members whose path would escape the extraction root (`../x`, absolute
paths, drive letters) and links or device entries are never read: they become
`unsafe_member` rejects, because a dataset archive from the internet is
untrusted input.
"""

from __future__ import annotations

import fnmatch
import functools
import lzma
import os
import posixpath
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# Everything reading a damaged archive can raise, whatever its compression: zip and tar headers,
# CRC checks (BadZipFile), deflate/gzip streams (zlib.error), bzip2 (OSError), xz/lzma
# (LZMAError), truncation (EOFError), encrypted or unknown methods (RuntimeError,
# NotImplementedError) and garbled size or offset fields (ValueError, OverflowError).
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, OSError, EOFError,
    RuntimeError, NotImplementedError, ValueError, OverflowError,
)


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def matches(relpath: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Glob filter on a posix relative path; `*` also matches across folders."""
    wanted, unwanted = _globs(include), _globs(exclude)
    return wanted.match(relpath) is not None and unwanted.match(relpath) is None


@functools.lru_cache(maxsize=64)
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """All `patterns` as one compiled regex (one match per path instead of one per pattern)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


def walk_folder(
    root: Path, include: tuple[str, ...], exclude: tuple[str, ...]
) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Yield `(path, relative posix path, lstat)` for regular files under `root`, sorted.

    Paths are under the resolved root, so a path is a stable identity of the file. Symbolic
    links are not followed, to files or folders: a link could point anywhere on the machine, and
    a source folder must mean exactly the files inside it. One `os.scandir` pass gives the file
    type and its stat, so a rescan of a million unchanged files costs one lstat each.
    """
    yield from _scan(Path(root).resolve(), "", include, exclude)


def _scan(folder: Path, prefix: str, include: tuple[str, ...], exclude: tuple[str, ...]
          ) -> Iterator[tuple[Path, str, os.stat_result]]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError:
        return  # unreadable folder: skipped, as os.walk does
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_file(follow_symlinks=False) and matches(rel, include, exclude):
            yield folder / entry.name, rel, entry.stat(follow_symlinks=False)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _scan(folder / entry.name, prefix + entry.name + "/", include, exclude)


@dataclass(frozen=True)
class Member:
    """One archive entry: its bytes, or why it was not read."""

    name: str
    data: bytes | None = None
    reason: str | None = None
    message: str | None = None


def unsafe_reason(name: str) -> str | None:
    """Why an archive member name is unsafe to materialise, or None if it is fine."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    normalized = posixpath.normpath(name.replace("\\", "/"))
    if normalized == ".." or normalized.startswith("../") or ".." in PurePosixPath(name).parts:
        return "path escapes the archive root (..)"
    return None


def _too_large(name: str, size: int, max_bytes: int) -> Member:
    return Member(
        name, reason="too_large",
        message=f"{size:,} bytes uncompressed, above ingest.max_file_mb ({max_bytes:,} bytes)",
    )


def _iter_zip(path: Path, max_bytes: int) -> Iterator[Member]:
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            unsafe = unsafe_reason(info.filename)
            if unsafe:
                yield Member(info.filename, reason="unsafe_member", message=f"not read: {unsafe}")
            elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                yield Member(info.filename, reason="unsafe_member", message="not read: symlink")
            elif info.file_size > max_bytes:
                yield _too_large(info.filename, info.file_size, max_bytes)
            else:
                try:
                    with zf.open(info) as fh:
                        yield Member(info.filename, data=fh.read(max_bytes + 1))
                except ARCHIVE_ERRORS as exc:
                    yield Member(info.filename, reason="corrupt_member", message=_describe(exc))


def _iter_tar(path: Path, max_bytes: int) -> Iterator[Member]:
    with tarfile.open(path, mode="r:*") as tf:
        for info in tf:  # streaming: a .tar.gz is read once, front to back
            if info.isdir():
                continue
            unsafe = unsafe_reason(info.name)
            if unsafe:
                yield Member(info.name, reason="unsafe_member", message=f"not read: {unsafe}")
            elif not info.isfile():
                kind = "link" if (info.issym() or info.islnk()) else "special file"
                yield Member(info.name, reason="unsafe_member", message=f"not read: {kind}")
            elif info.size > max_bytes:
                yield _too_large(info.name, info.size, max_bytes)
            else:
                try:
                    fh = tf.extractfile(info)
                    data = fh.read() if fh else b""
                except ARCHIVE_ERRORS as exc:
                    # A compressed tar is one stream: past a damaged member nothing can be read,
                    # so this member is rejected and the caller rejects the rest of the archive.
                    yield Member(info.name, reason="corrupt_member", message=_describe(exc))
                    raise
                yield Member(info.name, data=data)


def iter_archive(path: Path, max_bytes: int) -> Iterator[Member]:
    """Members of a zip or tar archive in a stable order; a broken archive yields one reject."""
    try:
        if path.name.lower().endswith(".zip"):
            yield from _iter_zip(path, max_bytes)
        else:
            yield from _iter_tar(path, max_bytes)
    except ARCHIVE_ERRORS as exc:
        yield Member("", reason="corrupt_archive",
                     message=f"archive cannot be read (from here on): {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    """The error's type and text: zlib's bare 'Error -3 ...' means little without its type."""
    return f"{type(exc).__name__}: {exc}"
