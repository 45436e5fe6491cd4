"""Following files another process appends to: the metrics stream and logs.

The trainer writes metrics.jsonl one flushed line at a time; a reader polls for new bytes.
Only complete lines are returned: a writer killed mid-line leaves a partial last line, which
is kept until its newline arrives (or forever, and never parsed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlTail:
    """Incremental reader of a JSON-lines file.

    `read()` returns `(records, reset)`: the records appended since the last call, and whether the
    file was replaced or truncated since (a resume rewrites the stream), in which case `records`
    is the whole new file and what the caller accumulated before is stale.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self._inode: int | None = None

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        reset = (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset
        if reset:
            self.offset, self._partial = 0, b""
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return [], reset
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(st.st_size - self.offset)
        except OSError:
            return [], reset
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a trailing newline
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records, reset


def tail_lines(path: str | Path, n: int = 200, max_bytes: int = 256 * 1024) -> list[str]:
    """The last `n` lines of a text file (reads at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    # Progress bars redraw with carriage returns; keep what the last redraw showed.
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if lines and not lines[-1]:
        lines.pop()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut
    return lines[-n:]
