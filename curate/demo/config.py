"""The demo section of params.yaml (the demo pipeline only)."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import ConfigError


@dataclass(frozen=True)
class DemoConfig:
    """The generated demo collection (`curate demo-data`), when the pipeline makes it: the
    demo's dvc.yaml has a stage that runs the generator with these, so DVC versions its
    output like any raw input. Absent from a project on a user's own photos."""

    n_base: int = 420  # base photos before the planted cases, which scale with it
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.n_base < 1:
            raise ConfigError(f"{key}.n_base: got {self.n_base}, expected 1 or more")
