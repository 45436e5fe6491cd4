"""The core stays free of Textual (only workbench/tui imports it), and light to import."""

from __future__ import annotations

import subprocess
import sys

CORE = ["workbench", "workbench.cli", "workbench.runs", "workbench.runs.evals", "workbench.runs.tail",
        "workbench.config", "workbench.training", "workbench.evaluation", "workbench.data", "workbench.models",
        "workbench.checkpoint", "attacks", "defenses"]


def _modules_after(imports: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_core_never_imports_textual():
    loaded = _modules_after(CORE)
    assert "textual" not in loaded
    assert not any(m.startswith(("textual.", "textual_plotext")) for m in loaded)


def test_cli_runs_and_tui_entry_do_not_import_torch():
    # `workbench tui` paints before torch is needed; the CLI's listing paths stay fast too.
    # Every screen module too: they are imported on the UI thread when a screen opens.
    loaded = _modules_after(["workbench.cli", "workbench.runs", "workbench.runs.evals", "workbench.tui",
                             "workbench.tui.app", "workbench.tui.screens.runs", "workbench.tui.screens.monitor",
                             "workbench.tui.screens.attack", "workbench.tui.screens.compare",
                             "workbench.tui.screens.new_run", "workbench.tui.screens.help"])
    assert "torch" not in loaded
