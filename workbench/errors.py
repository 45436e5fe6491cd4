"""User-facing errors.

A `WorkbenchError` is bad input or a missing resource, never a bug: the CLI prints
its message as one line and exits with status 2, without a traceback.
"""


class WorkbenchError(Exception):
    """An error the user can fix; its message is one self-contained line."""

    exit_code = 2


class TrainingFailed(WorkbenchError):
    """A run ended in the 'failed' state (e.g. a non-finite loss); not a usage error."""

    exit_code = 1
