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


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may hold before the rest of it is refused (zip and tar bombs).

    Each limit has its own reason code. `max_bytes` caps one member (ingest.max_file_mb);
    the others come from `ingest.archive` in params.yaml.
    """

    max_bytes: int
    max_members: int = 100_000
    max_total_bytes: int = 16 * 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed, per zip member and per archive
    max_name_length: int = 1024


#: Members smaller than this are never refused for their compression ratio: a small flat
#: image can compress 1000:1 and is harmless.
RATIO_FLOOR = 1024 * 1024


class _Budget:
    """Members and bytes an archive has used so far; says when the rest must be refused."""

    def __init__(self, limits: ArchiveLimits, compressed_size: int) -> None:
        self.limits = limits
        self.compressed = max(1, compressed_size)
        self.members = 0
        self.total = 0

    def exhausted(self, uncompressed_so_far: int) -> Member | None:
        """The one reject standing for the rest of the archive, or None to go on."""
        lim = self.limits
        if self.members >= lim.max_members:
            return Member("", reason="too_many_members",
                          message=f"more than {lim.max_members:,} members "
                                  "(ingest.archive.max_members): the rest is not read")
        if self.total > lim.max_total_bytes:
            return Member("", reason="archive_too_large",
                          message=f"over {lim.max_total_bytes:,} bytes uncompressed "
                                  "(ingest.archive.max_total_mb): the rest is not read")
        if uncompressed_so_far > lim.max_ratio * self.compressed:
            return Member("", reason="compression_ratio",
                          message=f"{uncompressed_so_far:,} bytes out of a "
                                  f"{self.compressed:,}-byte archive, a ratio above "
                                  f"{lim.max_ratio:g} (ingest.archive.max_ratio; a "
                                  "decompression bomb?): the rest is not read")
        return None

    def count(self, data_bytes: int) -> None:
        self.members += 1
        self.total += data_bytes


def _precheck(name: str, limits: ArchiveLimits) -> Member | None:
    """Why a member is refused by its name alone, or None."""
    if len(name) > limits.max_name_length:
        return Member(name[:limits.max_name_length], reason="name_too_long",
                      message=f"a {len(name):,}-character name, above "
                              f"ingest.archive.max_name_length ({limits.max_name_length:,})")
    unsafe = unsafe_reason(name)
    if unsafe:
        return Member(name, reason="unsafe_member", message=f"not read: {unsafe}")
    return None


def _overlapping(infos: list[zipfile.ZipInfo]) -> set[str]:
    """Names of entries whose data overlaps an earlier entry's: the trick of zip bombs that
    expand one compressed kernel many times (Python 3.11's zipfile does not check it)."""
    overlapping, end = set(), -1
    for info in sorted(infos, key=lambda i: (i.header_offset, i.filename)):
        if info.header_offset < end:
            overlapping.add(info.filename)
        end = max(end, info.header_offset + 30 + len(info.orig_filename.encode())
                  + info.compress_size)
    return overlapping


def _iter_zip(path: Path, limits: ArchiveLimits) -> Iterator[Member]:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        overlapping = _overlapping(infos)
        budget = _Budget(limits, path.stat().st_size)
        for info in sorted(infos, key=lambda i: i.filename):
            stop = budget.exhausted(budget.total)
            if stop:
                yield stop
                return
            refused = _precheck(info.filename, limits)
            ratio = info.file_size / max(1, info.compress_size)
            if refused:
                yield refused
            elif info.filename in overlapping:
                yield Member(info.filename, reason="overlapping_entries",
                             message="its data overlaps another entry's (a zip bomb's trick)")
            elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                yield Member(info.filename, reason="unsafe_member", message="not read: symlink")
            elif info.file_size > limits.max_bytes:
                yield _too_large(info.filename, info.file_size, limits.max_bytes)
            elif ratio > limits.max_ratio and info.file_size > RATIO_FLOOR:
                yield Member(info.filename, reason="compression_ratio",
                             message=f"{info.file_size:,} bytes from {info.compress_size:,}: a "
                                     f"ratio above {limits.max_ratio:g} (ingest.archive."
                                     "max_ratio; a decompression bomb?)")
            else:
                try:
                    with zf.open(info) as fh:
                        data = fh.read(limits.max_bytes + 1)
                except ARCHIVE_ERRORS as exc:
                    yield Member(info.filename, reason="corrupt_member", message=_describe(exc))
                    continue
                budget.count(len(data))
                yield Member(info.filename, data=data)


def _iter_tar(path: Path, limits: ArchiveLimits) -> Iterator[Member]:
    budget = _Budget(limits, path.stat().st_size)
    with tarfile.open(path, mode="r:*") as tf:
        for info in tf:  # streaming: a .tar.gz is read once, front to back
            # Skipping a member still decompresses it: a bomb is stopped by where the stream
            # would be after this member, before any of it is read.
            stop = budget.exhausted(info.offset_data + info.size)
            if stop:
                yield stop
                return
            if info.isdir():
                continue
            refused = _precheck(info.name, limits)
            if refused:
                yield refused
            elif not info.isfile():
                kind = "link" if (info.issym() or info.islnk()) else "special file"
                yield Member(info.name, reason="unsafe_member", message=f"not read: {kind}")
            elif info.size > limits.max_bytes:
                yield _too_large(info.name, info.size, limits.max_bytes)
            else:
                try:
                    fh = tf.extractfile(info)
                    data = fh.read() if fh else b""
                except ARCHIVE_ERRORS as exc:
                    # A compressed tar is one stream: past a damaged member nothing can be read,
                    # so this member is rejected and the caller rejects the rest of the archive.
                    yield Member(info.name, reason="corrupt_member", message=_describe(exc))
                    raise
                budget.count(len(data))
                yield Member(info.name, data=data)


def iter_archive(path: Path, limits: ArchiveLimits) -> Iterator[Member]:
    """Members of a zip or tar archive in a stable order; a broken archive yields one reject,
    and so does the rest of an archive past one of `limits`."""
    try:
        if path.name.lower().endswith(".zip"):
            yield from _iter_zip(path, limits)
        else:
            yield from _iter_tar(path, limits)
    except ARCHIVE_ERRORS as exc:
        yield Member("", reason="corrupt_archive",
                     message=f"archive cannot be read (from here on): {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    """The error's type and text: zlib's bare 'Error -3 ...' means little without its type."""
    return f"{type(exc).__name__}: {exc}"
