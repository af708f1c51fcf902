"""Integration fixtures: a real HTTP server in a thread, and ingest runs into tmp dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from bench.localserver import ImageServer, serving
from core.config import from_mapping
from core.manifest import read_table
from curate.config import Params
from curate.stages.ingest import IngestOptions, run_ingest


@pytest.fixture
def http_server() -> Iterator[ImageServer]:
    """A real threaded HTTP server on an ephemeral port, stopped after the test."""
    with serving() as server:
        yield server


def params_mapping(root: Path, sources: list[dict[str, Any]], workers: int = 1,
                   **ingest: Any) -> dict[str, Any]:
    """params.yaml content with the store and cache under `root`."""
    return {
        "workers": workers,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache")},
        "ingest": {"sources": sources, **ingest},
    }


@pytest.fixture
def make_params() -> Callable[..., Params]:
    """`make_params(root, sources, workers=1, **ingest)` -> validated Params."""
    return lambda *args, **kwargs: from_mapping(Params, params_mapping(*args, **kwargs), "")


@pytest.fixture
def write_params() -> Callable[..., Path]:
    """`write_params(root, sources, workers=1, **ingest)` -> path of a params.yaml in `root`."""

    def write(root: Path, *args: Any, **kwargs: Any) -> Path:
        path = root / "params.yaml"
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(params_mapping(root, *args, **kwargs)), encoding="utf-8")
        return path

    return write


class IngestResult:
    def __init__(self, summary: Any, out: Path) -> None:
        self.summary = summary
        self.out = out
        self.manifest: pd.DataFrame = read_table(out / "manifest.parquet")
        self.rejects: pd.DataFrame = read_table(out / "rejects.parquet")

    def table_bytes(self) -> tuple[bytes, bytes]:
        return ((self.out / "manifest.parquet").read_bytes(),
                (self.out / "rejects.parquet").read_bytes())

    def reasons(self) -> dict[str, str]:
        """source_uri -> reject reason."""
        return dict(zip(self.rejects["source_uri"], self.rejects["reason"], strict=True))

    def stored_uris(self) -> dict[str, list[str]]:
        """image_id -> every source URI that had its bytes."""
        return {row.image_id: list(row.source_uris) for row in self.manifest.itertuples()}


@pytest.fixture
def ingest() -> Callable[..., IngestResult]:
    """`ingest(params, out_dir, **IngestOptions)` runs the stage in-process and reads its tables."""

    def run(params: Params, out: Path, **options: Any) -> IngestResult:
        return IngestResult(run_ingest(params, IngestOptions(out_dir=out, **options)).summary, out)

    return run
