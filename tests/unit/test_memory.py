"""core.memory.reuse_freed_memory: a worker keeps the blocks it frees instead of faulting them
in again on every task (the cost that halved embedding throughput on Dask workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAULTS = """
import resource, numpy as np
from core.memory import reuse_freed_memory
if {tuned}:
    reuse_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def task():  # allocate, write and free 8 MiB, as a task's tensors are
    block = np.ones(2 << 20, np.float32)
    del block
start = faults()
task()
first = faults()
for _ in range(39):
    task()
print(first - start, faults() - first)
"""


def page_faults(tuned: bool) -> tuple[int, int]:
    """Minor page faults of the first round of an 8 MiB array and of the 39 rounds after it,
    in a process started as Dask's nanny starts its workers (`MALLOC_TRIM_THRESHOLD_` set)."""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", FAULTS.format(tuned=tuned)], env=env,
                         capture_output=True, text=True, check=True).stdout
    first, later = out.split()
    return int(first), int(later)


def test_a_worker_reuses_what_it_frees() -> None:
    """Without the setting the array is faulted in again round after round; with it, once.

    Rounds are compared with the first, not with a page count: where the kernel backs the
    mapping with 2 MiB transparent huge pages, a round costs a handful of faults instead of
    2,048 (20,640 against 502 faults in all on one machine of this project, 200 against 502
    on another)."""
    untuned_first, untuned_later = page_faults(tuned=False)
    tuned_first, tuned_later = page_faults(tuned=True)
    assert untuned_later >= 20 * max(untuned_first, 1), (untuned_first, untuned_later)
    assert tuned_later < max(tuned_first, 1), (tuned_first, tuned_later)
