"""Where datasets live on disk, and whether the workbench may fetch them."""

from __future__ import annotations

import os
from pathlib import Path

_OFFLINE_VALUES = {"1", "true"}


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: `root` if given, else $WORKBENCH_DATA, else a per-user cache folder.

    The folder is not created here: a loader that downloads creates it, and one that
    only reads should report the folder it searched rather than leave an empty one behind.
    """
    if root is not None and str(root) != "":
        chosen = Path(root)
    elif os.environ.get("WORKBENCH_DATA"):
        chosen = Path(os.environ["WORKBENCH_DATA"])
    else:
        # XDG says a relative XDG_CACHE_HOME is invalid and must be ignored.
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        cache = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
        chosen = cache / "workbench" / "data"
    # Absolute, so error messages name a folder the user can find from anywhere.
    return chosen.expanduser().absolute()


def download_allowed(download: bool | None = None) -> bool:
    """An explicit choice wins; otherwise WORKBENCH_OFFLINE=1/true forbids downloads."""
    if download is not None:
        return bool(download)
    return os.environ.get("WORKBENCH_OFFLINE", "").strip().lower() not in _OFFLINE_VALUES
