"""The contract every curation stage shares: the status values of a manifest row, and what a
stage's ``run_*`` function returns.

One enum for the statuses means a report, `curate show` and every later stage read a row the
same way, whichever stage wrote it. ``Status`` is a ``StrEnum``: its members compare equal to,
and are stored in manifests as, their plain strings, so manifests stay readable by pandas or
DuckDB without this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.console import StageSummary


class Status(StrEnum):
    """Where an image stands after a stage; only ``OK`` rows go on to the next stage."""

    OK = "ok"  # live
    REJECTED = "rejected"  # ingest: the bytes cannot be a usable image (rejects table)
    UNREADABLE = "unreadable"  # stored, but a later stage could not decode it
    DUPLICATE = "duplicate"  # dedup: another image of its cluster is kept
    OUTLIER = "outlier"  # quality or matte: a check flagged it (reasons in the row)
    ERROR = "error"  # a stage failed on this image (the message is in the row)
    EXCLUDED = "excluded"  # prepare: not exported into the dataset (reason in the row)


@dataclass
class StageResult:
    """What every stage's ``run_*`` returns, so the CLI, tests and benches read any stage alike.

    - ``summary``: counts per outcome and reason (printed and saved at the end of the stage);
      ``summary.cached`` is the number of images whose results came from per-image caches.
    - ``outputs``: every file the run wrote, by role (``manifest``, ``report``, ``summary``,
      ``zip``, ...).
    - ``computed``: images the run worked on itself (decoded, hashed, matted, prepared).
    - ``details``: the figures only one stage has, by name; each ``run_*`` docstring lists its
      own.
    """

    summary: StageSummary
    outputs: dict[str, Path] = field(default_factory=dict)
    computed: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        return self.summary.cached
