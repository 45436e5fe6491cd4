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

from workbench.runs import Status, effective_state, pid_alive, read_metrics
from workbench.tui.app import WorkbenchApp
from workbench.tui.model.history import Best, History, best_accuracy, best_text, downsample, eta_seconds, progress
from workbench.tui.screens import monitor as monitor_module
from workbench.tui.screens.monitor import MonitorScreen
from workbench.tui.widgets.line_chart import LineChart
from workbench.tui.widgets.run_charts import POINTS_PER_CELL, RunCharts

from .fixed_runs import DATA, FAILED, FINISHED, FIXED_NOW
from .waiting import wait_until, wait_until_settled

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


def shown(app: WorkbenchApp) -> bool:
    """The monitor has drawn the first data."""
    return ready(app) and charts(app).points > 0


def write_status(root: Path, **fields) -> None:
    """Change status.json the way the trainer does: atomically, so the monitor never reads half a file."""
    data = json.loads((root / "status.json").read_text())
    data.update(fields)
    tmp = root / "status.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, root / "status.json")


def notified(app: WorkbenchApp, text: str) -> bool:
    return any(text in n.message for n in app._notifications)


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


def test_best_values_fall_back_to_status_with_the_epoch_unknown():
    h = History(RECORDS)
    assert best_text(best_accuracy(h, None, "clean")) == "97.8% (ep 10)"
    lowest = h.lowest("train_loss")
    assert lowest.epoch == 15 and lowest.value == min(h.epoch_series("train_loss")[1])
    # The metrics stream gone (or not read yet): status.json's best, from no known epoch.
    status = Status(best_clean=0.9, best_robust=None)
    assert best_accuracy(History(), status, "clean") == Best(0.9, 0)
    assert best_text(best_accuracy(History(), status, "clean")) == "90.0%"
    assert best_accuracy(History(), status, "robust") is None and best_text(None) == "-"


def test_downsample_keeps_the_ends_and_the_spikes_within_the_budget():
    xs = [float(i) for i in range(50_000)]
    ys = [1.0 / (1 + i) for i in range(50_000)]
    ys[31_337] = 9.0  # one diverging step in a long run
    dx, dy = downsample(xs, ys, 200)
    assert len(dx) <= 200 and len(dx) == len(dy)
    assert (dx[0], dy[0]) == (0.0, 1.0) and dx[-1] == 49_999.0  # first and last points kept
    assert 9.0 in dy and dx == sorted(dx)  # the spike survives; x stays in order
    assert all(ys[int(x)] == y for x, y in zip(dx, dy))  # real points, not averages
    assert downsample(xs[:150], ys[:150], 200) == (xs[:150], ys[:150])  # a series that fits is whole


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
        await wait_until(pilot, lambda: shown(app), what="the monitor's first data")
        before = charts(app).points
        assert before == 2 + 2 + 2 + 2 + 4  # epoch loss, clean (robust null), train acc, lr: 2 each; steps 4
        step = {"kind": "step", "epoch": 3, "batch": 10, "step": 56, "train_loss": 0.8, "train_acc": 0.7,
                "lr": 0.003, "time": 1795417122.1}
        latencies = []
        for n, record in enumerate((step, {**step, "batch": 11, "step": 57}), start=1):
            with open(root / "metrics.jsonl", "a") as fh:
                fh.write(line(record))
            latencies.append(await wait_until(pilot, lambda: charts(app).points == before + n,
                                              what=f"appended step {n}"))
        # The issue asks for a new line on the chart within a second (the tail polls every 0.25 s). The
        # faster of two appends under 2 s: a loaded CI machine can stall one, a tail on a slow timer stalls both.
        assert min(latencies) < 2.0, f"the appended steps took {latencies} s to show"
        before += 2

        # A partial line (a writer mid-flush) is not drawn until its newline arrives.
        epoch = {**RECORDS[8], "test_robust_acc": 0.5}
        assert epoch["kind"] == "epoch" and epoch["epoch"] == 3
        text = line(epoch)
        with open(root / "metrics.jsonl", "a") as fh:
            fh.write(text[:40])
        # Proof that the tail has looked since the partial write: each poll reads metrics, then status;
        # the poll that shows the second marker began after the one that showed the first had ended.
        for batch in (17, 18):
            write_status(root, batch=batch)
            await wait_until(pilot, lambda: app.screen.status is not None and app.screen.status.batch == batch,
                             what=f"status marker {batch}")
        assert charts(app).points == before
        with open(root / "metrics.jsonl", "a") as fh:
            fh.write(text[40:])
        await wait_until(pilot, lambda: charts(app).points >= before + 5, what="the completed epoch line")
        assert charts(app).points == before + 5  # loss, clean, robust, train acc, lr: counted once
        screen = app.screen
        assert screen.history.epoch_series("test_robust_acc") == ([3.0], [0.5])


async def test_a_long_run_is_downsampled_to_the_chart_width(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=1)
    steps = [{"kind": "step", "epoch": 2, "batch": i, "step": i, "train_loss": 1.0 / i, "time": 1795417200.0 + i}
             for i in range(24, 20_024)]
    steps[7_000]["train_loss"] = 7.5  # a spike must still show
    with open(root / "metrics.jsonl", "a") as fh:
        fh.write("".join(line(r) for r in steps))
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: shown(app), what="the monitor's first data")
        chart = app.screen.query_one("#chart-steps", LineChart)
        await wait_until(pilot, lambda: chart.size.width > 0, what="the chart's layout")
        xs, ys = chart.series["train"]
        assert app.screen.history.step_series()[0][-1] == 20_023.0  # every record read...
        assert len(xs) <= POINTS_PER_CELL * chart.size.width  # ...but only what the width can show drawn
        assert (xs[0], xs[-1]) == (20.0, 20_023.0) and 7.5 in ys
        # The lowest epoch loss is in the loss chart's legend.
        loss = app.screen.query_one("#chart-loss", LineChart)
        assert list(loss.series) == [f"min {RECORDS[2]['train_loss']:.3g} (ep 1)"]


async def test_a_rewritten_metrics_file_replaces_what_the_charts_show(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=5)
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: shown(app), what="the monitor's first data")
        assert app.screen.history.epoch_series("train_loss")[0][-1] == 5.0
        # What a resume does: an atomic rewrite keeping the lines up to its checkpoint.
        tmp = root / "metrics.jsonl.tmp"
        tmp.write_text("".join(line(r) for r in RECORDS if r["epoch"] <= 1))
        os.replace(tmp, root / "metrics.jsonl")
        await wait_until(pilot, lambda: charts(app).points == 1 + 1 + 1 + 1 + 2, what="the rewritten stream")
        assert app.screen.history.epoch_series("train_loss")[0] == [1.0]


async def test_status_line_shows_progress_eta_and_device(fixed_runs):
    root = live_run(fixed_runs, epochs_kept=4, batch=11, batches=23, epochs=15, device="cpu")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: shown(app), what="the monitor's first data")
        text = str(app.screen.query_one("#monitor-status", Static).render())
        # Completed epochs, as the runs table counts them; the batch is within the epoch in progress.
        assert "running" in text and "4/15 epochs done" in text and "batch 11/23" in text
        assert text.endswith(" · cpu")  # at 100 columns the device goes without its label
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
        await wait_until(pilot, lambda: ready(app) and app.screen.log_lines, what="the log")
        error = app.screen.query_one("#monitor-error", Static)
        assert error.display and "non-finite loss at epoch 4" in str(error.render())
        assert app.screen.query_one(TabbedContent).active == "log"
        log = app.screen.query_one(Log)
        assert log.lines[-1] == "FloatingPointError: [nan] loss"
        with open(root / "train.log", "a") as fh:
            fh.write("one more line\n")
        await wait_until(pilot, lambda: log.lines[-1] == "one more line", what="the appended log line")
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


def _waiting_threads() -> int:
    """Threads now inside the monitor's stop/resume worker."""
    code = MonitorScreen._control.__code__
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code is code:
                count += 1
                break
            frame = frame.f_back
    return count


async def test_quitting_does_not_wait_for_a_trainer_that_is_stopping(fixed_runs):
    # A "trainer" that takes its time to stop: it ignores SIGTERM.
    slow = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline().strip() == "ready"
        root = live_run(fixed_runs, epochs_kept=2, pid=slow.pid)
        app = app_for(fixed_runs)
        async with app.run_test(size=(100, 32)) as pilot:
            app.open_monitor(root)
            await wait_until(pilot, lambda: shown(app) and app.screen.state == "running", what="a running run")
            await pilot.press("s")
            await wait_until(pilot, lambda: notified(app, f"(pid {slow.pid}): the trainer checkpoints first"),
                             what="the stop notice")
            await wait_until(pilot, lambda: _waiting_threads() == 1, what="the worker waiting for the trainer")
            assert slow.poll() is None  # still alive: the worker is waiting for it
        # The app has closed; its worker noticed at once, so Python's exit does not wait up to 120 s for it.
        start = time.monotonic()
        while _waiting_threads() and time.monotonic() - start < 10:
            time.sleep(0.05)
        assert _waiting_threads() == 0
        assert time.monotonic() - start < 2.0
    finally:
        slow.kill()
        slow.wait()


async def test_a_failed_stop_is_a_one_line_notice(fixed_runs, monkeypatch):
    root = live_run(fixed_runs, epochs_kept=2)

    def broken(path):
        raise TypeError("'NoneType' object cannot be interpreted as an integer\nsecond line")

    monkeypatch.setattr(monitor_module, "request_stop", broken)  # live_run's pid is this test: never signal it
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: shown(app) and app.screen.state == "running", what="a running run")
        await pilot.press("s")
        text = "stop failed: TypeError: 'NoneType' object cannot be interpreted as an integer"
        await wait_until(pilot, lambda: notified(app, text), what="the failure notice")
        assert not any("second line" in n.message for n in app._notifications)
        assert isinstance(app.screen, MonitorScreen)


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
            await wait_until(pilot, lambda: ready(app) and app.screen.state == "running" and app.screen.history.steps,
                             timeout=60, what="the trainer's first steps")
            screen = app.screen
            await pilot.press("s")
            # This notice comes once the trainer has checkpointed and exited.
            # It says where the resume state is (last.pt; best.pt is the best model, not where training goes on).
            await wait_until(pilot, lambda: notified(app, "resume state: checkpoints/last.pt · r resumes"),
                             timeout=60, what="the stopped notice")
            notice = next(n.message for n in app._notifications if "resume state" in n.message)
            assert notice.startswith(f"{run.name}: stopped by SIGTERM") and "best.pt" not in notice
            assert f"workbench train --resume {run}" in notice
            assert status_of().state == "stopped" and not pid_alive(status_of().pid)
            assert (run / "checkpoints" / "last.pt").is_file()
            await wait_until(pilot, lambda: screen.state == "stopped", what="the monitor's stopped state")
            hint = screen.query_one("#monitor-hint", Static)
            await wait_until(pilot, lambda: hint.display, what="the resume hint")
            assert "resume state: checkpoints/last.pt · r resumes" in str(hint.render())
            stopped_at = status_of().step

            await pilot.press("r")
            await wait_until(pilot, lambda: effective_state(status_of()) == "running", timeout=60, what="the resume")
            # The resume rewrote metrics.jsonl (reset): the tail starts over and keeps following.
            await wait_until(pilot, lambda: screen.history.steps and max(screen.history.steps) > stopped_at + 20,
                             timeout=60, what="steps after the resume")
            assert screen.state == "running"
            # What the monitor holds is what the file now says, step by step: nothing stale from before
            # the rewrite (a step trained again after the checkpoint has other values), nothing twice.
            on_disk = {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "step"}
            held = dict(screen.history.steps)
            assert held and all(on_disk.get(step) == record for step, record in held.items())
            assert [s for s in on_disk if s <= max(held)] == sorted(held)  # and no line missed
            await pilot.press("escape")  # leaving the monitor leaves the trainer running
            await pilot.pause(0.3)
            assert effective_state(status_of()) == "running"
    finally:
        _kill(run)


# -- snapshot ----------------------------------------------------------------------------------

def test_monitor_snapshot_finished_run(fixed_runs, snap_compare):
    async def open_it(pilot):
        pilot.app.open_monitor(fixed_runs / FINISHED)
        await wait_until(pilot, lambda: shown(pilot.app), what="the monitor's first data")
        bar = pilot.app.screen.query_one("#progress-run", ProgressBar)
        await wait_until(pilot, lambda: bar.percentage == 1.0, what="the finished run's full progress bar")
        await wait_until_settled(pilot)

    assert snap_compare(app_for(fixed_runs), terminal_size=(100, 32), run_before=open_it)
