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
                             "workbench.tui.screens.new_run", "workbench.tui.screens.help",
                             "workbench.tui.screens.suites", "workbench.tui.model.suites"])
    assert "torch" not in loaded


# Runs in its own interpreter: pytest itself imports torch, so sys.modules of the test process proves nothing.
NEW_RUN_FORM = """
import asyncio, sys
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.new_run import NewRunScreen

async def main():
    app = WorkbenchApp(sys.argv[1])
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_new_run()
        for _ in range(1200):
            await pilot.pause(0.05)
            if isinstance(app.screen, NewRunScreen) and app.screen.catalog is not None:
                break
        print("catalog", app.screen.catalog is not None and "tiny" in app.screen.catalog.models)
        print("torch", "torch" in sys.modules)

asyncio.run(main())
"""


def test_tui_new_run_form_loads_its_catalog_without_importing_torch(tmp_path):
    # The catalog (and the config checks) come from the TUI's backend process, which imports torch itself.
    out = subprocess.run([sys.executable, "-c", NEW_RUN_FORM, str(tmp_path / "runs")], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split("\n")
    assert "catalog True" in out
    assert "torch False" in out
