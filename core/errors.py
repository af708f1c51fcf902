"""Errors that callers catch without importing what raises them.

`curate`'s command line turns these into one red line; importing the Dask client (seconds)
just to name its error would slow every command down, and `core.parallel` and `core.cluster`
both raise it without importing each other in a cycle.
"""

from __future__ import annotations


class ClusterError(RuntimeError):
    """The cluster cannot be used (unreachable scheduler, no workers, project not shared)."""
