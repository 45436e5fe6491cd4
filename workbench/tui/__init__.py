"""`workbench tui`: the terminal UI, the only package that imports Textual.

The UI is a thin client of run folders and evaluation files: it starts `workbench train` and
`workbench attack` as detached processes and follows the files they write (status.json,
metrics.jsonl, evals/). It never trains or attacks inside its own event loop, and it never
imports torch: what needs torch (the new-run form's catalog and config checks, the attack
catalog, the example gallery) runs in one backend process (`workbench.tui.backend`) that the
UI starts after its first paint and that exits with it.
"""

from __future__ import annotations

from pathlib import Path


def run_tui(runs_dir: Path) -> None:
    from .app import WorkbenchApp
    from .widgets.image_grid import probe_graphics

    probe_graphics()  # asks the terminal for Kitty/Sixel support: only possible before Textual reads stdin
    WorkbenchApp(runs_dir).run()
