"""What produced a result: code version (git commit), package versions, machine."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("workbench", "torch", "torchvision", "numpy", "textual", "rich", "typer", "pydantic", "pyyaml")


def git_commit(where: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repository holding `where`, or None outside one."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance() -> dict[str, Any]:
    return {
        "git": git_commit(Path(__file__).resolve().parent),  # the workbench code
        "cwd_git": git_commit(Path.cwd()),  # the user's experiment repository, if any
        "cwd": str(Path.cwd()),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
    }
