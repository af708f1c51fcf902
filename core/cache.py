"""Per-image result cache shared by all stages.

Results are keyed by `(op, key)` where `op` names the operation together with
its version and the hash of the parameters that change its result (see
`op_key`), and `key` is usually the image id (a content hash). DVC reruns a
whole stage when anything it depends on changes; this cache makes that rerun
cost only the images that are new, so adding 1% of images costs about 1%.

SQLite in WAL mode gives atomic commits for free: a stage killed mid-write
loses at most the batch in flight, never corrupts earlier results. Only the
coordinating process writes (workers return results), so there is no lock
contention. Deleting the cache folder is always safe: it only costs time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (op, key)
) WITHOUT ROWID
"""


def open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    """A SQLite database for per-image results: WAL (atomic batches, readers never blocked),
    relaxed fsync (a crash may lose the last batch, which is only recomputed), schema ensured."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(schema)
    db.commit()
    return db


def select_keys(db: sqlite3.Connection, select: str, op: str, keys: Iterable[str],
                key_column: str = "key") -> Iterator[tuple[Any, ...]]:
    """Rows of `select` (a "SELECT ... FROM table") for `op` and those of `keys` present,
    queried 500 keys at a time (SQLite's limit on bound parameters)."""
    keys = list(keys)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        yield from db.execute(f"{select} WHERE op = ? AND {key_column} IN ({marks})",
                              [op, *chunk])


def op_key(name: str, version: int, params: Mapping[str, Any] | None = None) -> str:
    """Identity of an operation: bump `version` when its code changes its output."""
    if not params:
        return f"{name}:v{version}"
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return f"{name}:v{version}:{hashlib.sha256(blob).hexdigest()[:16]}"


class SqliteCache:
    """A cache file: opened (schema ensured) on construction, closed by `close` or `with`."""

    schema: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_sqlite(self.path, self.schema)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultCache(SqliteCache):
    """JSON values in SQLite, read and written in batches."""

    schema = _SCHEMA

    def get_many(self, op: str, keys: Iterable[str]) -> dict[str, Any]:
        """Cached values for those of `keys` that have one."""
        return dict(self.iter_many(op, keys))

    def iter_many(self, op: str, keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """(key, value) for those of `keys` that have a value, one at a time: for callers
        that keep only part of each value."""
        for k, v in select_keys(self._db, "SELECT key, value FROM results", op, keys):
            yield k, json.loads(v)

    def get(self, op: str, key: str) -> Any | None:
        return self.get_many(op, [key]).get(key)

    def put_many(self, op: str, items: Iterable[tuple[str, Any]]) -> None:
        """Store values in one transaction (all or nothing)."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (op, key, value) VALUES (?, ?, ?)",
                ((op, k, json.dumps(v, sort_keys=True)) for k, v in items),
            )

    def put(self, op: str, key: str, value: Any) -> None:
        self.put_many(op, [(key, value)])

    def delete(self, op: str, keys: Iterable[str]) -> None:
        with self._db:
            self._db.executemany(
                "DELETE FROM results WHERE op = ? AND key = ?", ((op, k) for k in keys)
            )

    def items(self, op: str) -> Iterator[tuple[str, Any]]:
        for key, value in self._db.execute("SELECT key, value FROM results WHERE op = ?", [op]):
            yield key, json.loads(value)

    def count(self, op: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM results WHERE op = ?", [op]).fetchone()
        return int(row[0])


class KeyValueCache(Protocol):
    """What batched writers and `core.imagemap.cached_map` need of a cache (`ResultCache`,
    `curate.embeddings.EmbeddingCache`)."""

    def get_many(self, op: str, keys: Iterable[str]) -> dict[str, Any]: ...

    def put_many(self, op: str, items: Iterable[tuple[str, Any]]) -> None: ...


class BatchWriter:
    """Buffers a cache's writes so they are committed in transactions: when `every` values
    are pending, or when the oldest has waited `max_age_s`. One transaction per value would
    make SQLite's commit the bottleneck; the age bound keeps what a killed run loses small
    where each value is slow to make (a matte takes most of a second)."""

    def __init__(self, cache: KeyValueCache, every: int = 256, max_age_s: float = 10.0) -> None:
        self.cache = cache
        self.every = every
        self.max_age_s = max_age_s
        self.pending: dict[str, list[tuple[str, Any]]] = {}
        self.size = 0
        self.oldest = 0.0  # monotonic time of the first pending value

    def put(self, op: str, key: str, value: Any) -> None:
        if not self.size:
            self.oldest = time.monotonic()
        self.pending.setdefault(op, []).append((key, value))
        self.size += 1
        if self.size >= self.every or time.monotonic() - self.oldest >= self.max_age_s:
            self.flush()

    def flush(self) -> None:
        for op, items in self.pending.items():
            self.cache.put_many(op, items)
        self.pending.clear()
        self.size = 0
