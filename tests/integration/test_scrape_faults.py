"""Scraping against a server that misbehaves on a seeded 30% of its URLs (`bench/faults.py`):
every recoverable URL is fetched within the retry budget, every other one rejected with its
reason, none unaccounted for, and the run's time bounded."""

from __future__ import annotations

import pytest

from bench.faults import FAULTS, run_against_faults

pytestmark = pytest.mark.integration


def test_a_misbehaving_server_loses_no_url(tmp_path, http_server) -> None:
    run = run_against_faults(http_server, tmp_path)
    assert set(run.faults) == set(FAULTS)  # every kind of fault was served
    assert not run.unaccounted and not run.stored & set(run.rejected)
    assert sorted(run.stored) == sorted(run.recoverable)  # 100% of recoverable URLs fetched
    assert run.rejected == {u: r for u, r in run.expected.items() if r is not None}
    # Bounded: the slowest URL waits out a few attempt deadlines; URLs run concurrently.
    assert run.seconds < 60, run.seconds
