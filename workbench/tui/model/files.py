"""Noticing that a file another process writes has changed, without reading it (pure: no textual)."""

from __future__ import annotations

import os
from pathlib import Path

Signature = tuple[int, int, int]


def file_signature(path: str | Path) -> Signature | None:
    """(inode, size, mtime) of a file or folder, None when it is missing: a stat call, no read.

    The inode catches an atomic replace that keeps the size; the mtime an in-place rewrite.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
