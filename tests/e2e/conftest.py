"""The repository copies these tests run `dvc repro` in have no `models/pretrained/` (it is
gitignored): point every stage at this checkout's provisioned models instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def shared_models_dir() -> Iterator[None]:
    """Set CURATE_MODELS_DIR (unless already set) for the subprocesses the tests start."""
    if os.environ.get("CURATE_MODELS_DIR"):
        yield
        return
    os.environ["CURATE_MODELS_DIR"] = str(REPO / "models" / "pretrained")
    try:
        yield
    finally:
        os.environ.pop("CURATE_MODELS_DIR", None)
