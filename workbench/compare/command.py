"""`workbench compare RUN...`: robust accuracy per attack × eps across runs, with 95% intervals.

Torch-free (the CLI starts without it); `register(app)` adds the command to the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the `compare` command to `app`."""
    app.command(name="compare")(compare)


def compare(
    runs: List[Path] = typer.Argument(..., metavar="RUN", help="Run folders, or checkpoints (their run, that "
                                                              "checkpoint's evaluations)."),
    fmt: str = typer.Option("md", "--format", "-f", help="md | csv | latex | json"),
    columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated metric names or globs, e.g. "
                                                                  "'clean,PGD*@0.1,worst *'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
) -> None:
    """Robust accuracy per attack x eps across runs (95% Wilson intervals), from their saved evaluations."""
    from ..suites.render import FORMATS, render
    from .table import build_compare_table

    FORMATS.get(fmt)  # an unknown format fails before any file is read
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    text = render(build_compare_table(runs, wanted), fmt)
    if output is not None:
        from ..atomic import atomic_write_text

        atomic_write_text(output, text)
        print(f"saved: {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
