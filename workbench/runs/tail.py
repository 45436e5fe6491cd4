"""Following files another process appends to: the metrics stream and logs.

The trainer writes metrics.jsonl one flushed line at a time; a reader polls for new bytes.
Only complete lines are returned: a writer killed mid-line leaves a partial last line, which
is kept until its newline arrives (or forever, and never parsed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from .files import MAX_LINE_BYTES, open_regular, parse_record

# One read takes at most this much of the file; the rest comes with the next calls, so a huge stream
# is never in memory at once (a poller catches up within a few polls).
MAX_READ_BYTES = 16 << 20


class JsonlTail:
    """Incremental reader of a JSON-lines file.

    `read()` returns `(records, reset)`: the records appended since the last call, and whether the
    file was replaced or truncated since (a resume rewrites the stream), in which case `records`
    is the new file from its start (its first MAX_READ_BYTES; the next calls return the rest) and what
    the caller accumulated before is stale. A line longer than MAX_LINE_BYTES is skipped, never held.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self._skipping = False  # inside a line too long to keep: drop bytes up to its newline
        self._inode: int | None = None

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        reset = (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset
        if reset:
            self.offset, self._partial, self._skipping = 0, b"", False
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return [], reset
        try:
            with open_regular(self.path) as fh:
                fh.seek(self.offset)
                chunk = fh.read(min(st.st_size - self.offset, MAX_READ_BYTES))
        except (OSError, WorkbenchError):
            return [], reset
        self.offset += len(chunk)
        records = [r for r in map(parse_record, self._complete_lines(chunk)) if r is not None]
        return records, reset

    def _complete_lines(self, chunk: bytes) -> list[bytes]:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" after a trailing newline
        if self._skipping and lines:
            lines.pop(0)  # the end of the oversized line
            self._skipping = False
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial, self._skipping = b"", True
        return lines


def tail_lines(path: str | Path, n: int = 200, max_bytes: int = 256 * 1024) -> list[str]:
    """The last `n` lines of a text file (reads at most `max_bytes` from its end)."""
    try:
        with open_regular(path) as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except (OSError, WorkbenchError):
        return []
    text = data.decode("utf-8", errors="replace")
    # Progress bars redraw with carriage returns; keep what the last redraw showed.
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if lines and not lines[-1]:
        lines.pop()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut
    return lines[-n:]
