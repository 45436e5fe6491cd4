"""The Runs screen (home): listing, live refresh, marking, detail line, delete with confirmation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.widgets import DataTable, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.runs import RunsScreen

from .fixed_runs import FAILED, FINISHED, FIXED_NOW, STOPPED


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


async def test_lists_every_run_newest_first_with_state_and_accuracy(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        keys = [row.value for row in table.rows]
        assert [Path(k).name for k in keys] == [STOPPED, FAILED, FINISHED]
        finished = table.get_row(str(fixed_runs / FINISHED))
        assert "finished" in str(finished[2]) and finished[3] == "15/15" and finished[4] == "97.8%"
        assert "82.2%" == finished[5] and finished[6] == "digits/tiny/softmax"


async def test_failed_run_shows_its_error_line(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down")  # stopped -> failed
        detail = str(app.screen.query_one("#run-detail", Static).render())
        assert "failed" in detail and "non-finite loss" in detail


async def test_new_run_folder_appears_without_restart(fixed_runs, tmp_path):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(DataTable)
        assert table.row_count == 3
        copy = fixed_runs / "copy-20261123-080000"
        shutil.copytree(fixed_runs / FINISHED, copy)
        status = json.loads((copy / "status.json").read_text())
        (copy / "status.json").write_text(json.dumps({**status, "started": FIXED_NOW - 5}))
        for _ in range(40):  # the watcher looks every second
            await pilot.pause(0.1)
            if table.row_count == 4:
                break
        assert table.row_count == 4
        assert Path(table.coordinate_to_cell_key((0, 0)).row_key.value).name == copy.name


async def test_delete_asks_first_and_no_keeps_the_run(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, RunsScreen)
        assert (fixed_runs / STOPPED).is_dir()
        await pilot.press("d", "y")
        for _ in range(30):
            await pilot.pause(0.05)
            if not (fixed_runs / STOPPED).exists():
                break
        assert not (fixed_runs / STOPPED).exists()
        assert (fixed_runs / FAILED).is_dir()


async def test_compare_needs_two_marked_runs(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)  # refused with a notice
        await pilot.press("space")
        table = app.screen.query_one(DataTable)
        assert table.get_row_at(0)[0] == "●"
        await pilot.press("space")
        assert table.get_row_at(0)[0] == " "
