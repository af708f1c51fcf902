"""Turning SIGTERM / SIGINT into "checkpoint, then exit" instead of "die mid-step".

Cluster schedulers and `torchrun` send SIGTERM before killing a job (and torchrun forwards it
to every worker); a person presses Ctrl-C (SIGINT). The handler only records the request; the
training loop checks it between iterations (all ranks agree through one all-reduce), writes a
checkpoint and exits with status 128 + signal number (143 for SIGTERM, 130 for SIGINT). That
status is not 0 on purpose: `dvc repro` must not record a half-trained model as the stage's
output, and `torchrun --max-restarts` must restart the run. A second signal stops at once.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """Raised by the training loop after it wrote the checkpoint of a requested stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Records the first SIGTERM/SIGINT; restores the previous handlers on `uninstall`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: do not wait for the step to finish
            sys.stderr.write(f"\n{signal.Signals(signum).name} again: stopping without a "
                             f"checkpoint (the previous one is intact)\n")
            sys.exit(128 + signum)
        self.signum = signum
        sys.stderr.write(f"\n{signal.Signals(signum).name}: finishing this step, writing a "
                         f"checkpoint, then exiting (send it again to stop at once)\n")

    def install(self) -> StopFlag:
        for sig in HANDLED:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
