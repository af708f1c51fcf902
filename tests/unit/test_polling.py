"""core.polling.until: the one wait-with-deadline loop."""

from __future__ import annotations

import time

import pytest

from core.polling import until


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([None, 0, "", "ready", "later"])
    assert until(lambda: next(answers), "an answer", timeout=5, interval=0) == "ready"


def test_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        until(lambda: False, "the moon", timeout=0.2, interval=0.05)
    assert 0.2 <= time.monotonic() - started < 1.0


def test_an_error_in_the_check_stops_the_wait_at_once() -> None:
    def exited() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        until(exited, "a process", timeout=60)
