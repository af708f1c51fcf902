"""What people see while a stage runs: progress bars and the end-of-stage summary.

Everything goes to stderr so stdout stays clean for machine-readable output.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from core import atomic

console = Console(stderr=True, highlight=False)


class _RateColumn(ProgressColumn):
    """Items per second, the figure people compare runs by."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "", style="cyan")


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Show a bar with count, rate and ETA; yield a function that advances it by n."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task_id, n)


@dataclass
class StageSummary:
    """Counts in and out per outcome and reason, printed and saved at the end of a stage."""

    stage: str
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    cached: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # seconds, in the order first timed

    def count(self, outcome: str, reason: str | None = None, n: int = 1) -> None:
        self.counts[outcome] += n
        if reason:
            self.reasons[reason] += n

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a step of the stage: where the time went is printed (never saved: the
        summary file must be the same bytes on a rerun)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - started

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def metrics(self) -> dict[str, object]:
        """Deterministic figures only (no timings), fit for a DVC metrics file."""
        return {
            "stage": self.stage,
            "counts": dict(sorted(self.counts.items())),
            "reasons": dict(sorted(self.reasons.items())),
        }

    def save(self, path: Path) -> None:
        atomic.write_text(Path(path), json.dumps(self.metrics(), indent=2) + "\n")

    def print(self) -> None:
        processed = sum(self.counts.values())
        table = Table(title=f"{self.stage}: summary", show_header=True, header_style="bold")
        table.add_column("outcome")
        table.add_column("count", justify="right")
        for outcome, n in sorted(self.counts.items()):
            table.add_row(outcome, f"{n:,}")
        for reason, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"  {reason}", f"{n:,}", style="dim")
        console.print(table)
        rate = processed / self.elapsed if self.elapsed > 0 else 0.0
        console.print(
            f"{self.stage}: {processed:,} inputs in {self.elapsed:.1f} s "
            f"({rate:,.1f}/s), {self.cached:,} from cache"
        )
        if self.phases:
            console.print(f"{self.stage}: time by step: " + ", ".join(
                f"{name} {seconds:.1f} s" for name, seconds in self.phases.items()))
