"""The errors a command turns into one red line and an exit status, instead of a traceback.

Every command of `curate` and `train` follows one contract (`core.cli`): a `UserError` (a
problem the person running the command can fix: a missing input, a model file not provisioned,
an unreachable server, a run already holding the folder) prints `error: <message>` and exits 1;
a `ParamsError` (a bad value in params.yaml or on the command line) prints `error in params:
<message>` and exits 2; anything else is a bug and keeps its traceback. Stages raise the
subclass that names their problem; the command line never needs to list them.

They live here, apart from what raises them, so a caller can catch one without importing the
machinery behind it (a Dask client takes seconds to import).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 1
    label = "error"


class ParamsError(UserError):
    """A bad setting (params.yaml or a command-line option)."""

    exit_code = 2
    label = "error in params"


class ClusterError(UserError, RuntimeError):
    """The cluster cannot be used (unreachable scheduler, no workers, project not shared)."""
