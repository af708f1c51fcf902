"""Training metrics through dvclive, so `dvc plots show` and `dvc metrics show` display them.

Only rank 0 logs. One dvclive step per tick. On resume, rows logged after the checkpoint (by
the run that was interrupted) are dropped from the plot files before dvclive reopens them, so
a resumed run's curves have no duplicated or orphaned stretch. dvclive writes its files in
place, so a run killed mid-write can leave a half row in a plot file (a broken point in
`dvc plots`), or a half-written metrics.json or params.yaml, which dvclive fails to reopen
(every restart of the run would fail): the half row is dropped, and a summary file that does
not parse is removed (the summary is rewritten at the next tick, the params at the end of the
run). dvclive is told not to edit dvc.yaml and not to create DVC experiments by itself: the
stage declares its outputs, and `dvc exp run` works as usual around it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any
from unittest import mock

from scmrepo.exceptions import SCMError

from core import atomic


def truncate_after(folder: Path, step: int) -> int:
    """Drop rows with step >= `step` from dvclive's TSV plot files, and a row cut short by a
    kill (no newline after it, or fields missing); a file whose header was cut short is
    removed. Return the rows dropped."""
    dropped = 0
    for tsv in Path(folder).glob("plots/metrics/**/*.tsv"):
        text = tsv.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        whole = lines if not lines or lines[-1].endswith("\n") else lines[:-1]
        rows = list(csv.reader(whole, delimiter="\t"))
        if not rows:  # killed while writing the header: dvclive writes it again
            tsv.unlink()
            continue
        if "step" not in rows[0]:
            continue
        col, width = rows[0].index("step"), len(rows[0])
        keep = [rows[0]] + [r for r in rows[1:]
                            if len(r) == width and r[col].isdigit() and int(r[col]) < step]
        if len(keep) != len(lines):
            dropped += len(lines) - len(keep)
            atomic.write_text(tsv, "".join("\t".join(r) + "\n" for r in keep))
    return dropped


def remove_unreadable_summaries(folder: Path) -> list[str]:
    """Remove dvclive's metrics.json and params.yaml where they do not parse as a mapping
    (written in place, and cut short by a kill); return the names removed."""
    import yaml

    removed = []
    for name, parse in (("metrics.json", json.loads), ("params.yaml", yaml.safe_load)):
        path = Path(folder) / name
        if not path.exists():
            continue
        try:
            readable = isinstance(parse(path.read_text(encoding="utf-8")), dict)
        except (ValueError, yaml.YAMLError):  # JSONDecodeError and UnicodeDecodeError too
            readable = False
        if not readable:
            path.unlink()
            removed.append(name)
    return removed


class Metrics:
    """dvclive on the main rank; a silent stand-in elsewhere (or when disabled)."""

    def __init__(self, folder: Path, enabled: bool, resume_step: int | None) -> None:
        self.live: Any = None
        if not enabled:
            return
        from dvclive import Live

        resume = resume_step is not None and Path(folder).exists()
        if resume:
            truncate_after(folder, int(resume_step or 0))
            remove_unreadable_summaries(folder)
        kwargs = {"dir": str(folder), "resume": resume, "save_dvc_exp": False, "dvcyaml": None,
                  "report": None}
        try:
            self.live = Live(**kwargs)
        except SCMError:
            # dvclive 3.x asks git for HEAD when run by `dvc repro` and fails in a repository
            # without commits (a fresh `git init`); the metric files do not need git.
            with mock.patch.object(Live, "_init_dvc", lambda _self: None):
                self.live = Live(**kwargs)
        self.live.step = int(resume_step or 0)

    def log(self, values: dict[str, float], step: int) -> None:
        """Log one tick's values at `step` (non-finite values are skipped: a bad tick is in
        the console log, and dvc's plots do not accept NaN)."""
        if self.live is None:
            return
        self.live.step = step
        for name, value in values.items():
            if math.isfinite(value):
                self.live.log_metric(name, float(value))
        self.live.next_step()

    def summary(self, values: dict[str, Any]) -> None:
        """Final figures (FID, KID, images seen) into metrics.json only, not the plots."""
        if self.live is None:
            return
        for name, value in values.items():
            self.live.log_metric(name, value, plot=False)
        self.live.make_summary()

    def params(self, values: dict[str, Any]) -> None:
        """Facts of the run that are not metrics (the dataset lineage) into live/params.yaml."""
        if self.live is not None:
            self.live.log_params(values)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
