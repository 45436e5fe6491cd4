"""User-facing errors.

A `WorkbenchError` is bad input or a missing resource, never a bug: the CLI prints
its message as one line and exits with status 2, without a traceback.
"""


class WorkbenchError(Exception):
    """An error the user can fix; its message is one self-contained line."""

    exit_code = 2
