"""The Runs screen (home): listing, live refresh, marking, detail line, delete with confirmation."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.monitor import MonitorScreen
from workbench.tui.screens.runs import RunsScreen

from .fixed_runs import FAILED, FINISHED, FIXED_NOW, STOPPED
from .waiting import wait_until


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
        assert "82.2%" == finished[5] and finished[7] == "digits/tiny/softmax"


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
        await wait_until(pilot, lambda: table.row_count == 4, what="the new run listed")  # polled every second
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
        await wait_until(pilot, lambda: not (fixed_runs / STOPPED).exists(), what="the run folder deleted")
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


async def test_stop_on_a_run_that_is_not_running_says_so(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down", "down", "s")  # the finished run
        await pilot.pause()
        assert any("is not running (finished)" in str(n.message) for n in app._notifications)
        assert (fixed_runs / FINISHED / "status.json").read_text() == (
            Path(__file__).parent / "data" / "quickstart" / "status.json").read_text()


async def test_a_run_with_broken_files_is_listed_without_crashing(fixed_runs):
    broken = fixed_runs / "broken-20261123-090000"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.yaml").write_text("- a list, not a mapping\n")
    (broken / "status.json").write_text(json.dumps({"state": "running", "epoch": "x", "best_clean": "high",
                                                    "started": FIXED_NOW - 60, "pid": None}))
    (fixed_runs / "half-written").mkdir()  # a folder without config.yaml is not a run
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 4
        row = table.get_row(str(broken))
        assert row[3] == "0/0" and row[4] == "-" and row[7] == "?/?/?"


# -- unreadable run folders ------------------------------------------------------------------

def many_good_runs(runs: Path, count: int) -> list[Path]:
    """`count` copies of the finished run with their own start times (the fixed runs come on top)."""
    made = []
    status = json.loads((runs / FINISHED / "status.json").read_text())
    for i in range(count):
        root = runs / f"copy{i:02d}-20261120-000000"
        shutil.copytree(runs / FINISHED, root)
        (root / "status.json").write_text(json.dumps({**status, "started": status["started"] - 100 * (i + 1)}))
        made.append(root)
    return made


def bad_runs(runs: Path) -> dict[str, Path]:
    """The probe's two crashes: a config of 5000 nested brackets, and a pid no process can have."""
    nested = runs / "nested-20261123-100000"
    (nested / "checkpoints").mkdir(parents=True)
    (nested / "config.yaml").write_text("[" * 5000)
    huge_pid = runs / "hugepid-20261123-100000"
    shutil.copytree(runs / FINISHED, huge_pid)
    status = json.loads((huge_pid / "status.json").read_text())
    (huge_pid / "status.json").write_text(json.dumps({**status, "state": "running", "pid": 10**30,
                                                      "host": socket.gethostname(), "started": FIXED_NOW - 60}))
    return {"nested": nested, "pid": huge_pid}


def notices(app: WorkbenchApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def select(app: WorkbenchApp, root: Path) -> None:
    table = app.screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(str(root)))


async def test_unreadable_runs_are_rows_among_good_ones_with_their_reason(fixed_runs):
    good = many_good_runs(fixed_runs, 20)  # 23 good runs in all
    bad = bad_runs(fixed_runs)
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 25
        for root in good + [fixed_runs / FINISHED]:
            assert "finished" in str(table.get_row(str(root))[2])
        for root in bad.values():
            assert "unreadable" in str(table.get_row(str(root))[2])
        select(app, bad["pid"])
        await pilot.pause()
        detail = str(app.screen.query_one("#run-detail", Static).render())
        assert "unreadable" in detail and "status.json: pid out of range" in detail
        select(app, bad["nested"])
        await pilot.pause()
        assert "config.yaml: invalid YAML" in str(app.screen.query_one("#run-detail", Static).render())
        await pilot.pause(1.5)  # a live refresh keeps all 25 rows and the cursor
        assert table.row_count == 25 and app.screen.current().path == bad["nested"]


async def test_actions_on_an_unreadable_run_refuse_with_a_notice(fixed_runs):
    many_good_runs(fixed_runs, 20)
    bad = bad_runs(fixed_runs)
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        for root in bad.values():
            for key in ("enter", "r", "a", "s"):
                select(app, root)
                before = len(notices(app))
                await pilot.press(key)
                await pilot.pause()
                assert isinstance(app.screen, RunsScreen), key
                assert any("is unreadable" in n for n in notices(app)[before:]), key
        select(app, bad["pid"])
        await pilot.press("space")
        select(app, fixed_runs / FINISHED)
        await pilot.press("space", "c")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and "is unreadable" in notices(app)[-1]
        assert (bad["pid"] / "status.json").is_file()  # nothing resumed it or wrote to it
        assert json.loads((bad["pid"] / "status.json").read_text())["pid"] == 10**30


async def test_an_unreadable_run_can_be_deleted(fixed_runs):
    bad = bad_runs(fixed_runs)
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        for root in bad.values():
            select(app, root)
            await pilot.press("d", "y")
            await wait_until(pilot, lambda: not root.exists(), what=f"{root.name} deleted")
        await wait_until(pilot, lambda: app.screen.query_one(DataTable).row_count == 3, what="the rows gone")


async def test_markup_in_a_run_s_files_is_shown_as_text(fixed_runs):
    odd = fixed_runs / "odd-[bold]-20261123-100000"  # markup that would style the name
    shutil.copytree(fixed_runs / FINISHED, odd)
    status = json.loads((odd / "status.json").read_text())
    (odd / "status.json").write_text(json.dumps({**status, "state": "failed", "message": "[/bold] oops [red",
                                                 "device": "[/]", "started": FIXED_NOW - 1}))
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        select(app, odd)
        await pilot.pause()
        assert "[/bold] oops [red" in str(app.screen.query_one("#run-detail", Static).render())
        table = app.screen.query_one(DataTable)
        row = table.get_row(str(odd))
        assert table.row_count == 4 and Text.from_markup(row[1]).plain == odd.name
        assert Text.from_markup(row[8]).plain == "[/]"


async def test_the_monitor_opens_on_a_broken_run_and_says_why(fixed_runs):
    root = bad_runs(fixed_runs)["pid"]
    (root / "config.yaml").write_bytes(b"[" * 5000 + b"\xff")
    with open(root / "metrics.jsonl", "a") as fh:
        fh.write("[" * 100_000 + "\ngarbage\n" + '{"kind": "epoch", "epoch": 99, "test_clean_acc": NaN}\n')
        fh.write('{"kind": "step", "step": 100000000000000000000000000000000, "train_loss": 1e400}\n')
    os.mkfifo(root / "train.log")  # reading a named pipe would wait for a writer forever
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.problem,
                         what="the monitor's first read")
        error = str(app.screen.query_one("#monitor-error", Static).render())
        assert "unreadable" in error and "pid out of range" in error and "config.yaml" in error
        assert app.screen.history.epochs  # the good lines still chart
        await pilot.press("3")  # the log tab: the pipe is not read
        await pilot.pause(0.5)
        assert isinstance(app.screen, MonitorScreen) and app.screen.problem
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
