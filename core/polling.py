"""Wait for something another process does: one polling loop, with a deadline.

Starting a server, a scheduler writing its address file, a training job reaching a
checkpoint: each is observed by asking again until the answer comes or time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T | None], what: str, timeout: float,
          interval: float = 0.05) -> T:
    """Call `check` every `interval` seconds until it returns a truthy value, and return it.

    Raises `TimeoutError` naming `what` after `timeout` seconds. `check` may raise to give up
    early (the process it waits for has exited, say): its exception passes through.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(interval, left))
