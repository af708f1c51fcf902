"""Every stage of dvc.yaml killed (SIGKILL) at seeded moments, then run again: its outputs are
byte-identical to an uninterrupted run's (harness: bench/reliability.py; the benchmark runs it
with more kill points and commits the figures)."""

from __future__ import annotations

import pytest

from bench.reliability import STAGES, kill_every_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_a_killed_stage_reruns_to_the_same_bytes(tmp_path) -> None:
    results = kill_every_stage(tmp_path, kills=2, n_base=40, seed=1)
    assert [r.stage for r in results] == list(STAGES)
    for r in results:
        assert r.kills == 2, r
        assert r.identical, f"{r.stage}: {r.differing}"
