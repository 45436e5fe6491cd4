"""The Run monitor's charts and status line: sparse robust points, legends off the data, round ticks,
train accuracy and lr, a status line that fits, a chart maximised; snapshots at 80x24 and 120x36."""

from __future__ import annotations

import re
from pathlib import Path

from rich.text import Text
from textual.widgets import ProgressBar, Static

from workbench.tui.screens.monitor import MonitorScreen
from workbench.tui.widgets.line_chart import POINT_MARKER, LineChart

from .fixed_runs import FINISHED, STOPPED
from .test_monitor import RECORDS, app_for, live_run, shown
from .waiting import wait_until, wait_until_settled

CADENCE = "robust every 5 epochs + the last (PGD-10 eps 0.1 on 359) · clean every epoch"


def chart(app, selector: str) -> LineChart:
    return app.screen.query_one(selector, LineChart)


def drawn(c: LineChart) -> list[str]:
    """The chart as it shows on screen, one string per row."""
    return c.render().plain.splitlines()


async def open_run(pilot, root: Path) -> None:
    pilot.app.open_monitor(root)
    await wait_until(pilot, lambda: shown(pilot.app), what="the monitor's first data")
    await wait_until(pilot, lambda: chart(pilot.app, "#chart-accuracy").size.width > 0, what="the charts' layout")
    await pilot.pause(0.1)


async def test_the_first_robust_point_is_a_visible_marker_in_place_and_the_cadence_is_shown(fixed_runs):
    # Five epochs of fifteen: robust accuracy has been measured once (epoch 5, eval.robust_every 5).
    root = live_run(fixed_runs, epochs_kept=5, epochs=15)
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run(pilot, root)
        acc = chart(app, "#chart-accuracy")
        assert acc.series["robust"] == ([5.0], [RECORDS[14]["test_robust_acc"]])
        assert "robust" in acc.marked and "clean" not in acc.marked
        assert acc.xlim == (1.0, 15.0)  # the run's epochs, not just those done so far
        rows = drawn(acc)
        plot = [r for r in rows[1:] if "┤" in r or "│" in r]
        marker_rows = [r for r in plot if POINT_MARKER in r]
        assert len(marker_rows) == 1  # one point, drawn as a whole cell
        row = marker_rows[0]
        left, right = row.index("┤" if "┤" in row else "│") + 1, row.rindex("│")
        column = (row.index(POINT_MARKER) - left) / (right - left)
        assert 0.2 < column < 0.4  # epoch 5 of 1..15, not at the right edge
        cadence = app.screen.query_one("#chart-cadence", Static)
        assert cadence.display and str(cadence.render()) == CADENCE


async def test_legends_are_above_the_plot_and_ticks_are_round(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run(pilot, fixed_runs / FINISHED)
        for selector in ("#chart-accuracy", "#chart-loss", "#chart-lr", "#chart-steps"):
            c = chart(app, selector)
            rows = drawn(c)
            assert len(rows) == c.size.height
            names = list(c.series)
            assert all(name in rows[0] for name in names)  # the legend is the header line...
            body = "\n".join(rows[1:])
            assert not any(name in body for name in names)  # ...and nowhere on the data
            # x ticks: whole numbers (epochs, steps) on the last row.
            xlabels = rows[-1].split()
            assert xlabels and all(re.fullmatch(r"\d+", t) for t in xlabels), (selector, rows[-1])
        acc_labels = [r.split("┤")[0].strip() for r in drawn(chart(app, "#chart-accuracy")) if "┤" in r]
        assert acc_labels == ["100%", "75%", "50%", "25%", "0%"]
        assert drawn(chart(app, "#chart-accuracy"))[-1].split() == ["1", "5", "10", "15"]
        loss_labels = [r.split("┤")[0].strip() for r in drawn(chart(app, "#chart-loss")) if "┤" in r]
        assert loss_labels and all(re.fullmatch(r"\d+(\.5)?", t) for t in loss_labels), loss_labels


async def test_train_accuracy_and_lr_are_charted(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run(pilot, fixed_runs / FINISHED)
        history = app.screen.history
        assert chart(app, "#chart-accuracy").series["train"] == history.epoch_series("train_acc")
        lr = chart(app, "#chart-lr").series["lr"]
        assert lr == history.epoch_series("lr") and len(lr[0]) == 15
        assert lr[1][0] > lr[1][-1]  # the cosine schedule decays
        assert "learning rate" in drawn(chart(app, "#chart-lr"))[0]


async def test_the_status_line_fits_at_80_and_120_columns(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=4, batch=11, batches=23, epochs=15,
                    device="cuda:0 (NVIDIA H100 80GB HBM3)")
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run(pilot, root)
        status = app.screen.query_one("#monitor-status", Static)
        for width in (120, 80):
            await pilot.resize_terminal(width, 36)
            await wait_until(pilot, lambda: app.screen.size.width == width, what=f"the {width}-column layout")
            await pilot.pause(0.1)
            text = Text.from_markup(str(status.render())).plain
            assert status.size.height == 1 and len(text) <= width - 2, (width, text)
            assert "running" in text and "4/15" in text and "ETA " in text
            if width == 120:
                assert "batch 11/23" in text and "best clean 93.9% (ep 3)" in text
                assert "cuda:0" in text
            else:
                assert "clean 93.9%" in text
                # What did not fit is named, not silently cut.
                assert "batch 11/23" in text and "robust 82.2%" in text
                assert text.endswith(" · cuda:0") or text.endswith(" · …device"), text


async def test_m_maximises_the_focused_chart_and_restores_it(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run(pilot, fixed_runs / FINISHED)
        screen = app.screen
        lr = chart(app, "#chart-lr")
        lr.focus()
        await pilot.press("m")
        assert screen.maximized is lr
        await pilot.pause(0.1)
        assert lr.size.width == 80 and lr.size.height >= 20  # the whole screen but the footer
        assert "learning rate" in drawn(lr)[0]
        await pilot.press("m")
        assert screen.maximized is None and lr.size.width < 80
        # With no chart focused, `m` takes the accuracy chart; escape restores it and stays in the monitor.
        screen.set_focus(None)
        await pilot.press("m")
        assert screen.maximized is chart(app, "#chart-accuracy")
        await pilot.press("escape")
        assert screen.maximized is None and isinstance(app.screen, MonitorScreen)


# -- snapshots -----------------------------------------------------------------------------

def _settled(root: Path):
    async def open_it(pilot):
        await open_run(pilot, root)
        bar = pilot.app.screen.query_one("#progress-run", ProgressBar)
        await wait_until(pilot, lambda: bar.progress > 0, what="the progress bar")
        await wait_until_settled(pilot)
    return open_it


def test_monitor_snapshot_stopped_run_at_80x24(fixed_runs, snap_compare):
    # Stopped after epoch 6: one robust point (epoch 5), the resume hint under the status line.
    (fixed_runs / STOPPED / "checkpoints" / "last.pt").write_bytes(b"")
    assert snap_compare(app_for(fixed_runs), terminal_size=(80, 24), run_before=_settled(fixed_runs / STOPPED))


def test_monitor_snapshot_finished_run_at_120x36(fixed_runs, snap_compare):
    assert snap_compare(app_for(fixed_runs), terminal_size=(120, 36), run_before=_settled(fixed_runs / FINISHED))


def test_monitor_snapshot_maximised_chart_at_80x24(fixed_runs, snap_compare):
    async def maximise(pilot):
        await _settled(fixed_runs / FINISHED)(pilot)
        pilot.app.screen.query_one("#chart-accuracy", LineChart).focus()
        await pilot.press("m")
        await wait_until_settled(pilot)

    assert snap_compare(app_for(fixed_runs), terminal_size=(80, 24), run_before=maximise)


def test_a_status_line_too_long_for_80_columns_names_what_it_leaves_out():
    from workbench.runs import Status
    from workbench.tui.model.history import History, progress
    from workbench.tui.model.monitor_text import status_line

    history = History([r for r in RECORDS if r["epoch"] <= 4])
    status = Status(state="running", epoch=4, epochs=15, batch=11, batches=23, device="cuda:0 (NVIDIA H100)",
                    best_robust=0.8)
    text = Text.from_markup(status_line("running", status, progress(history, status), history, 3 * 3600 + 720,
                                        width=78)).plain
    assert len(text) <= 78 and "ETA 3h12m" in text and "robust" in text and "clean" in text
    # The device, then the batch (the epoch bar shows it) are left out, and the line says so.
    assert text.endswith(" · …device,batch"), text
    full = Text.from_markup(status_line("running", status, progress(history, status), history, 3 * 3600 + 720)).plain
    assert "device cuda:0 (NVIDIA H100)" in full and "batch 11/23 of the next" in full
