"""The Runs screen's age column, sort keys, filter and the hint line for columns out of view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.model.format import compact_duration, since
from workbench.tui.screens.runs import COLUMNS, RunsScreen

from .fixed_runs import FAILED, FINISHED, FIXED_NOW, STOPPED


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


def names(app: WorkbenchApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [Path(row.value).name for row in table.rows]


def bar(app: WorkbenchApp) -> str:
    return str(app.screen.query_one("#runs-bar", Static).render())


def column(app: WorkbenchApp, label: str) -> list[str]:
    table = app.screen.query_one(DataTable)
    index = [c[0] for c in COLUMNS].index(label)
    return [str(table.get_row(row.value)[index]) for row in table.rows]


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (17.9, "17s"), (59.99, "59s"), (60, "1m"), (90, "1m"),
                                            (42 * 60 + 3, "42m"), (3 * 3600 + 5 * 60 + 59, "3h05m"),
                                            (9 * 3600 + 59 * 60 + 59, "9h59m"), (10 * 3600 + 5 * 60, "10h"),
                                            (86399, "23h"), (2 * 86400 + 7 * 3600, "2d"), (987 * 86400, "987d"),
                                            (10**12, ">999d"), (-1, "-"), (float("nan"), "-"), (None, "-")])
def test_compact_duration_never_needs_more_than_five_characters(seconds, shown):
    assert compact_duration(seconds) == shown and len(shown) <= 5


def test_since_counts_from_then_and_clamps_a_clock_ahead():
    assert since(FIXED_NOW - 90, FIXED_NOW) == "1m" and since(FIXED_NOW + 5, FIXED_NOW) == "0s"
    assert since(0.0, FIXED_NOW) == "-" and since(None, FIXED_NOW) == "-"


def started_at(runs: Path, name: str, started: float, updated: float, **status) -> Path:
    root = runs / name
    shutil.copytree(runs / FINISHED, root)
    data = json.loads((root / "status.json").read_text())
    (root / "status.json").write_text(json.dumps({**data, "started": started, "updated": updated, **status}))
    return root


async def test_age_counts_from_the_start_and_updated_from_the_last_heartbeat(fixed_runs):
    # A live run started 90 s ago whose status was written 17 s ago: 1m old, updated 17s ago.
    started_at(fixed_runs, "live-20261123-080000", FIXED_NOW - 90, FIXED_NOW - 17, state="running")
    started_at(fixed_runs, "long-20261120-080000", FIXED_NOW - 42 * 60 - 3, FIXED_NOW - 5)
    started_at(fixed_runs, "days-20261120-070000", FIXED_NOW - 2 * 86400 - 3 * 3600, FIXED_NOW - 86400)
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        rows = {name: (age, updated) for name, age, updated in zip(names(app), column(app, "age"),
                                                                    column(app, "updated"))}
        assert rows["live-20261123-080000"] == ("1m", "17s")
        assert rows["long-20261120-080000"] == ("42m", "5s")
        assert rows["days-20261120-070000"] == ("2d", "1d")
        assert rows[STOPPED] == ("6m", "5m") and rows[FINISHED] == ("26m", "26m")
        age_width = table.columns["age"].width
        assert all(len(age) <= age_width for age, _ in rows.values())  # never cut ("42m03s ag")


async def test_sort_keys_cycle_the_column_and_reverse_it(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert names(app) == [STOPPED, FAILED, FINISHED]  # age: newest first
        assert "sort: age, newest first (o/O)" in bar(app)
        await pilot.press("O")
        assert names(app) == [FINISHED, FAILED, STOPPED] and "age, oldest first" in bar(app)
        await pilot.press("o")  # run, A to Z
        assert names(app) == [STOPPED, FAILED, FINISHED] and "sort: run, A to Z" in bar(app)
        await pilot.press("O")
        assert names(app) == [FINISHED, FAILED, STOPPED]
        await pilot.press("o")  # state: live first, then what stopped short, finished last
        assert "sort: state, live first" in bar(app) and names(app) == [FAILED, STOPPED, FINISHED]
        await pilot.press("o", "o", "o")  # epoch, clean, robust
        assert "sort: robust, highest first" in bar(app)
        assert names(app) == [FINISHED, STOPPED, FAILED]  # 82.2%, 71.0%, none
        await pilot.press("O")  # lowest first; a run without a robust accuracy stays last
        assert names(app) == [STOPPED, FINISHED, FAILED] and "robust, lowest first" in bar(app)
        for _ in range(4):  # data/model/defense, device, updated, then back to age
            await pilot.press("o")
        assert "sort: age, newest first" in bar(app) and names(app) == [STOPPED, FAILED, FINISHED]


async def test_clicking_a_header_sorts_by_it_and_again_reverses(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        x = sum(c.get_render_width(table) for c in list(table.columns.values())[:4]) + 2  # inside 'clean'
        await pilot.click("#runs-table", offset=(x, 0))
        assert "sort: clean, highest first" in bar(app) and names(app) == [FINISHED, STOPPED, FAILED]
        await pilot.click("#runs-table", offset=(x, 0))
        assert "sort: clean, lowest first" in bar(app) and names(app) == [FAILED, STOPPED, FINISHED]


async def test_slash_filters_by_name_dataset_model_or_defense_and_escape_clears(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        field = app.screen.query_one("#runs-filter", Input)
        assert not field.display
        await pilot.press("slash")
        assert field.display and field.has_focus
        await pilot.press(*"quickstart")  # letters that are also keys (q quits, s stops, d deletes) go to the field
        assert isinstance(app.screen, RunsScreen) and names(app) == [FINISHED]
        assert "filter 'quickstart': 1 of 3 runs" in bar(app)
        await pilot.press("enter")  # back to the table; the filter stays, named by the hint line
        assert app.screen.query_one(DataTable).has_focus and not field.display and names(app) == [FINISHED]
        assert "filter 'quickstart'" in bar(app)
        await pilot.press("slash")  # edits the same filter
        assert field.display and field.value == "quickstart"
        await pilot.press("enter")
        await pilot.pause(1.5)  # a live refresh keeps the filter
        assert names(app) == [FINISHED]
        await pilot.press("escape")
        assert names(app) == [STOPPED, FAILED, FINISHED] and not field.display and "/ filter" in bar(app)
        await pilot.press("slash", *"digits pcl")  # every word must match: the dataset and the defense
        assert names(app) == [FAILED]
        await pilot.press("ctrl+u", *"TINY")  # the model, any case
        assert names(app) == [STOPPED, FAILED, FINISHED]
        await pilot.press("ctrl+u", *"nothing-like-this")
        assert names(app) == []
        empty = app.screen.query_one("#runs-empty", Static)
        assert empty.display and "No run matches 'nothing-like-this'" in str(empty.render())
        await pilot.press("escape")
        assert names(app) == [STOPPED, FAILED, FINISHED] and not empty.display


async def test_filter_and_sort_together_and_marks_survive_the_filter(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("space")  # mark the stopped run
        await pilot.press("slash", *"digits", "enter", "o")
        assert names(app) == [STOPPED, FAILED, FINISHED]  # run, A to Z
        await pilot.press("escape", "slash", *"pcl", "enter")
        assert names(app) == [FAILED] and app.screen.marked == {str(fixed_runs / STOPPED)}
        await pilot.press("escape")
        assert app.screen.query_one(DataTable).get_row(str(fixed_runs / STOPPED))[0] == "●"


async def test_at_80_columns_the_columns_that_matter_show_and_a_hint_names_the_rest(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.hidden_columns() == ([], ["data/model/defense", "device", "updated"])
        assert "→ 3 more columns" in bar(app) and len(bar(app)) <= 78
        await pilot.press("right", "right", "right", "right")  # the row cursor scrolls sideways
        await pilot.pause()
        left, right = screen.hidden_columns()
        assert left and "←" in bar(app)
        await pilot.resize_terminal(120, 36)
        await pilot.pause()
        await pilot.press("home")
        await wait_for_bar(pilot, app, lambda text: "more column" not in text)
        assert screen.hidden_columns() == ([], [])


async def wait_for_bar(pilot, app, condition) -> None:
    from .waiting import wait_until

    await wait_until(pilot, lambda: condition(bar(app)), what="the hint line")
