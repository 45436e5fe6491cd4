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


def describe_os_error(exc: OSError, path=None) -> str:
    """One line for a failed file operation, naming the path: 'no space left on device writing X'."""
    import errno

    where = path if path is not None else (exc.filename or "a file")
    if exc.errno == errno.ENOSPC:
        return f"no space left on device writing {where} (the previous version, if any, is kept)"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded writing {where} (the previous version, if any, is kept)"
    return f"cannot write {where}: {exc.strerror or exc}"
