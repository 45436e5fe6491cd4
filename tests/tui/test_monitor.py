"""The Run monitor: live charts from an appended metrics stream, progress/ETA, a failed run, stop/resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from textual.widgets import Log, ProgressBar, Static, TabbedContent

from workbench.runs import Status, effective_state, pid_alive
from workbench.tui.app import WorkbenchApp
from workbench.tui.model.history import History, eta_seconds, progress
from workbench.tui.screens.monitor import MonitorScreen
from workbench.tui.widgets.run_charts import RunCharts

from .fixed_runs import DATA, FAILED, FINISHED, FIXED_NOW

REPO = Path(__file__).resolve().parents[2]
RECORDS = [json.loads(line) for line in (DATA / "metrics.jsonl").read_text().splitlines()]


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


def line(record: dict) -> str:
    return json.dumps(record) + "\n"


def charts(app: WorkbenchApp) -> RunCharts:
    return app.screen.query_one(RunCharts)


def ready(app: WorkbenchApp) -> bool:
    """The monitor is up and its worker has delivered the first data."""
    screen = app.screen
    return isinstance(screen, MonitorScreen) and screen.is_mounted and bool(screen.query(RunCharts)) \
        and screen.status is not None


async def wait_for(pilot, condition, timeout: float = 1.0) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "not within the time limit"
        await pilot.pause(0.05)
    return time.monotonic() - start


def live_run(runs: Path, epochs_kept: int, **status) -> Path:
    """A copy of the finished run cut back to `epochs_kept` epochs, 'running' in this very process."""
    root = runs / "live-20261123-090000"
    shutil.copytree(runs / FINISHED, root)
    kept = [r for r in RECORDS if r["epoch"] <= epochs_kept]
    (root / "metrics.jsonl").write_text("".join(line(r) for r in kept))
    base = json.loads((root / "status.json").read_text())
    base.update({"state": "running", "pid": os.getpid(), "host": socket.gethostname(), "epoch": epochs_kept,
                 "batch": 0, "message": "", **status})
    (root / "status.json").write_text(json.dumps(base))
    return root


# -- the pure history model --------------------------------------------------------------------

def test_history_keeps_the_last_record_per_epoch_and_restarts_on_reset():
    h = History(RECORDS)
    xs, ys = h.epoch_series("test_clean_acc")
    assert xs == [float(e) for e in range(1, 16)]
    assert h.best("test_clean_acc").epoch == 10 and abs(h.best("test_clean_acc").value - 0.9777) < 1e-3
    assert h.epoch_series("test_robust_acc")[0] == [5.0, 10.0, 15.0]  # null where not measured
    repeated = {**RECORDS[2], "train_loss": 9.0}  # a resumed epoch 1 written again
    h.apply([repeated], reset=False)
    assert h.epoch_series("train_loss")[1][0] == 9.0 and len(h.epoch_series("train_loss")[0]) == 15
    h.apply(RECORDS[:3], reset=True)
    assert h.epoch_series("train_loss")[0] == [1.0] and h.step_series()[0] == [20.0, 23.0]


def test_progress_and_eta_follow_status_and_recent_epoch_times():
    h = History([r for r in RECORDS if r["epoch"] <= 4])
    status = Status(state="running", epoch=4, epochs=15, batch=0, batches=23, step=92)
    pos = progress(h, status)
    assert (pos.epoch, pos.batch) == (4, 0)
    step = {"kind": "step", "epoch": 5, "batch": 20, "step": 112, "train_loss": 0.5, "time": RECORDS[-1]["time"]}
    h.add([step])  # a step line newer than the status heartbeat moves the batch on
    assert progress(h, status).batch == 20
    eta = eta_seconds(h, status, "running")
    per_epoch = h.seconds_per_epoch()
    assert per_epoch and abs(eta - (15 - 4 - 20 / 23) * per_epoch) < 1e-6
    assert eta_seconds(h, status, "stopped") is None
    done = progress(History(RECORDS), Status(state="finished", epoch=15, epochs=15, batches=23))
    assert done.epoch_fraction == 1.0 and done.overall_fraction == 1.0


# -- the screen --------------------------------------------------------------------------------

async def test_charts_gain_points_as_metrics_lines_are_appended(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=2)
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_for(pilot, lambda: ready(app) and charts(app).points > 0)
        before = charts(app).points
        assert before == 2 + 2 + 4  # epoch loss 2, clean 2 (robust null), steps 4
        step = {"kind": "step", "epoch": 3, "batch": 10, "step": 56, "train_loss": 0.8, "train_acc": 0.7,
                "lr": 0.003, "time": 1795417122.1}
        with open(root / "metrics.jsonl", "a") as fh:
            fh.write(line(step))
        await wait_for(pilot, lambda: charts(app).points == before + 1)

        # A partial line (a writer mid-flush) is not drawn until its newline arrives.
        epoch = {**RECORDS[8], "test_robust_acc": 0.5}
        assert epoch["kind"] == "epoch" and epoch["epoch"] == 3
        text = line(epoch)
        with open(root / "metrics.jsonl", "a") as fh:
            fh.write(text[:40])
        await pilot.pause(0.6)
        assert charts(app).points == before + 1
        with open(root / "metrics.jsonl", "a") as fh:
            fh.write(text[40:])
        await wait_for(pilot, lambda: charts(app).points == before + 1 + 3)  # loss, clean, robust
        assert charts(app).points == before + 4  # counted once
        screen = app.screen
        assert screen.history.epoch_series("test_robust_acc") == ([3.0], [0.5])


async def test_a_rewritten_metrics_file_replaces_what_the_charts_show(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=5)
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_for(pilot, lambda: ready(app) and charts(app).points > 0)
        assert app.screen.history.epoch_series("train_loss")[0][-1] == 5.0
        # What a resume does: an atomic rewrite keeping the lines up to its checkpoint.
        tmp = root / "metrics.jsonl.tmp"
        tmp.write_text("".join(line(r) for r in RECORDS if r["epoch"] <= 1))
        os.replace(tmp, root / "metrics.jsonl")
        await wait_for(pilot, lambda: charts(app).points == 1 + 1 + 2)
        assert app.screen.history.epoch_series("train_loss")[0] == [1.0]


async def test_status_line_shows_progress_eta_and_device(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=4, batch=11, batches=23, epochs=15, device="cpu")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_for(pilot, lambda: ready(app) and charts(app).points > 0)
        text = str(app.screen.query_one("#monitor-status", Static).render())
        assert "running" in text and "epoch 4/15" in text and "batch 11/23" in text and "device cpu" in text
        assert "ETA " in text and "ETA -" not in text
        assert "best clean 93.9% (ep 3)" in text  # the highest so far, and where
        bar = app.screen.query_one("#progress-epoch", ProgressBar)
        assert (bar.progress, bar.total) == (11, 23)
        overall = app.screen.query_one("#progress-run", ProgressBar)
        assert overall.total == 15 and abs(overall.progress - (4 + 11 / 23)) < 1e-9


async def test_failed_run_shows_its_error_and_opens_on_the_log(fixed_runs):
    root = fixed_runs / FAILED
    (root / "train.log").write_text("epoch 4 ...\nTraceback (most recent call last):\nFloatingPointError: [nan] loss\n")
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_monitor(root)
        await wait_for(pilot, lambda: ready(app) and app.screen.log_lines)
        error = app.screen.query_one("#monitor-error", Static)
        assert error.display and "non-finite loss at epoch 4" in str(error.render())
        assert app.screen.query_one(TabbedContent).active == "log"
        log = app.screen.query_one(Log)
        assert log.lines[-1] == "FloatingPointError: [nan] loss"
        with open(root / "train.log", "a") as fh:
            fh.write("one more line\n")
        await wait_for(pilot, lambda: log.lines[-1] == "one more line")
        await pilot.press("1")
        assert app.screen.query_one(TabbedContent).active == "charts"
        await pilot.press("s")  # not running: a notice, nothing else
        assert isinstance(app.screen, MonitorScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, MonitorScreen)


def test_every_binding_is_described():
    assert all(b.description for b in MonitorScreen.BINDINGS)


# -- stop and resume a real trainer ----------------------------------------------------------

def _kill(run: Path) -> None:
    status = Status.read(run / "status.json")
    if status is None or not status.pid or not pid_alive(status.pid):
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(status.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(status.pid):
            time.sleep(0.1)
        if not pid_alive(status.pid):
            return


async def test_stop_and_resume_a_real_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "workbench", "train", "--profile", "quickstart", "--set",
                           "epochs=300", "--out", str(tmp_path), "--detach"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Path(proc.stdout.splitlines()[0].removeprefix("run: ").strip())
    status_of = lambda: Status.read(run / "status.json")  # noqa: E731
    try:
        app = WorkbenchApp(tmp_path)
        async with app.run_test(size=(100, 32)) as pilot:
            app.open_monitor(run)
            await wait_for(pilot, lambda: ready(app) and app.screen.state == "running"
                           and app.screen.history.steps, timeout=60)
            screen = app.screen
            await pilot.press("s")
            # The notice comes when stop_run returned: the trainer checkpointed and exited.
            await wait_for(pilot, lambda: any(n.message.endswith(": stopped") for n in app._notifications), timeout=60)
            assert status_of().state == "stopped" and not pid_alive(status_of().pid)
            await wait_for(pilot, lambda: screen.state == "stopped")
            stopped_at = status_of().step

            await pilot.press("r")
            await wait_for(pilot, lambda: effective_state(status_of()) == "running", timeout=60)
            # The resume rewrote metrics.jsonl (reset): the tail starts over and keeps following.
            await wait_for(pilot, lambda: screen.history.steps and max(screen.history.steps) > stopped_at + 20,
                           timeout=60)
            assert screen.state == "running"
            assert sorted(screen.history.steps) == sorted(set(screen.history.steps))
            await pilot.press("escape")  # leaving the monitor leaves the trainer running
            await pilot.pause(0.3)
            assert effective_state(status_of()) == "running"
    finally:
        _kill(run)


# -- snapshot ----------------------------------------------------------------------------------

def test_monitor_snapshot_finished_run(fixed_runs, snap_compare):
    async def open_it(pilot):
        pilot.app.open_monitor(fixed_runs / FINISHED)
        await wait_for(pilot, lambda: ready(pilot.app) and charts(pilot.app).points > 0)
        await pilot.pause(0.2)

    assert snap_compare(app_for(fixed_runs), terminal_size=(100, 32), run_before=open_it)
