"""Read URL lists: plain text (one per line), CSV or Parquet with a url column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class UrlListError(ValueError):
    pass


def read_url_list(path: Path, column: str = "url") -> list[str]:
    """URLs in file order, blanks and `#` comments dropped, duplicates removed (first kept)."""
    path = Path(path)
    if not path.exists():
        raise UrlListError(f"URL list {path} not found (check ingest.sources in params.yaml)")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".parquet"):
        df = (
            pd.read_parquet(path)
            if suffix == ".parquet"
            else pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        )
        if column not in df.columns:
            raise UrlListError(
                f"{path} has no column {column!r} (columns: {', '.join(map(str, df.columns))}); "
                "set url_column for this source in params.yaml"
            )
        raw = df[column].dropna().astype(str).tolist()
    else:
        raw = path.read_text(encoding="utf-8").splitlines()
    urls = [u.strip() for u in raw]
    return list(dict.fromkeys(u for u in urls if u and not u.startswith("#")))
