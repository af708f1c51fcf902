"""Manifest and rejects tables: Parquet, written atomically and deterministically.

One table per stage, one row per image. Rows are sorted by a stable key before
writing so a rerun over the same inputs produces a byte-identical file, which
keeps DVC from seeing spurious changes downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import atomic

#: Columns every images manifest starts with (later stages append theirs).
CORE_COLUMNS = (
    "image_id", "source", "source_uri", "width", "height", "format", "mode", "bytes",
)
REJECT_COLUMNS = ("source", "source_uri", "reason", "message", "bytes", "sha256")


def write_table(
    df: pd.DataFrame, path: Path, sort_by: Sequence[str], schema: pa.Schema | None = None
) -> None:
    """Write `df` as Parquet atomically, rows sorted by `sort_by`, no pandas index."""
    if len(df):
        df = df.sort_values(list(sort_by), kind="stable")
    table = pa.Table.from_pandas(df.reset_index(drop=True), schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata embeds versions: not stable
    with atomic.atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: Path) -> pd.DataFrame:
    """Read a manifest; a missing file is an error that says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run the stage that produces it first (`dvc repro`)"
        )
    return pq.read_table(path).to_pandas()
