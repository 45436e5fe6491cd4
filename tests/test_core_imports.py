"""The core stays free of Textual (only workbench/tui imports it), and light to import."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys


def _walk(package: str) -> list[str]:
    """`package` and every module under it, found on disk (pkgutil), so a new module is checked at once.
    `__main__` is left out: importing it runs the command line."""
    root = importlib.import_module(package)
    found = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    return [name for name in found if name.rsplit(".", 1)[-1] != "__main__"]


TUI = _walk("workbench.tui")
# The core is the complement: every workbench module outside workbench.tui, and the attack and defense packages.
CORE = [m for m in _walk("workbench") if m not in TUI] + _walk("attacks") + _walk("defenses")

# Imports `argv` in order in a fresh interpreter; prints each module that was new after each import, so a
# failure names the import that brought a module in.
_IMPORTER = """
import importlib, sys
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    for new in sorted(set(sys.modules) - before):
        print(name, new)
"""


def _modules_after(imports: list[str]) -> dict[str, str]:
    """{module loaded: the import in `imports` that loaded it}, from a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _IMPORTER, *imports], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return {new: by for by, new in (line.split() for line in out.stdout.splitlines())}


def test_the_walk_finds_every_kind_of_module():
    assert {"workbench.tui.app", "workbench.tui.screens.runs", "workbench.tui.model.format",
            "workbench.tui.widgets.keyed_table", "workbench.tui.backend"} <= set(TUI)
    assert {"workbench.cli", "workbench.runs.evals", "workbench.training", "attacks.pgd", "defenses.pcl"} <= set(CORE)
    assert not any(m.startswith("workbench.tui") for m in CORE)


def test_core_never_imports_textual():
    loaded = _modules_after(CORE)
    textual = {m: by for m, by in loaded.items() if m == "textual" or m.startswith(("textual.", "textual_plotext"))}
    assert not textual, f"imported by: {sorted(set(textual.values()))}"


def test_cli_runs_and_every_tui_module_import_without_torch():
    # `workbench tui` paints before torch is needed; the CLI's listing paths stay fast too. Every module
    # of workbench/tui too: screens are imported on the UI thread when they open; the backend process
    # imports torch only when it runs, not when it is imported.
    loaded = _modules_after(["workbench.cli", "workbench.runs", "workbench.runs.evals", *TUI])
    assert "torch" not in loaded, f"torch imported by {loaded.get('torch')}"


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


# The CLI in a fresh interpreter: its exit status and error line, and whether torch was imported by then.
CLI_THEN_TORCH = """
import sys
from workbench.cli import main
sys.argv = ["workbench", *sys.argv[1:]]
try:
    main()
finally:
    print("torch", "torch" in sys.modules)
"""


def test_a_typo_in_attack_options_fails_before_torch_is_imported(tmp_path):
    # A bad eps, norm or step size is one error line in a fraction of a second, not after torch's import.
    for options, message in ((["--eps", "abc"], "--eps: 'abc' is not a number"),
                             (["--norm", "l3"], "--norm must be linf or l2"),
                             (["--eps", "0.1", "--step-size", "0"], "--step-size must be > 0")):
        out = subprocess.run([sys.executable, "-c", CLI_THEN_TORCH, "attack", str(tmp_path / "c.pt"), *options],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert out.stdout.split() == ["torch", "False"]
