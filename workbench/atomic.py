"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import WorkbenchError, describe_os_error


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any threads exist
    os.umask(mask)
    return mask


_UMASK = _read_umask()
# Temp files are `.<name>.<random>.tmp` beside their target (see `stale_temp_files`).
TEMP_SUFFIX = ".tmp"


class _RecordingWriter:
    """A file object that remembers the first OSError of a write. Writers such as torch.save turn it into
    an opaque RuntimeError ('enforce fail ... unexpected pos'); the recorded error says what happened."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temp file in the same folder, fsync, then rename over `path`. A failed write (a full
    disk, a read-only folder) leaves the previous file as it was and raises one `WorkbenchError` line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise WorkbenchError(describe_os_error(exc, path)) from None
    recorder = None
    try:
        with os.fdopen(fd, "wb") as fh:
            recorder = _RecordingWriter(fh)
            write(recorder)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError):
            raise WorkbenchError(describe_os_error(cause, path)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def stale_temp_files(folder: Path) -> list[Path]:
    """Temp files of interrupted atomic writes in `folder` (a SIGKILL mid-write leaves one behind)."""
    try:
        return [p for p in Path(folder).iterdir()
                if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    except OSError:
        return []
