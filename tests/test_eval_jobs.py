"""Background evaluation jobs: what the TUI's attack panel launches and follows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from workbench.runs.evals import EvalJob, launch_evaluation, list_jobs, list_reports

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait(job: EvalJob, deadline: float = 120.0) -> EvalJob:
    end = time.time() + deadline
    while time.time() < end:
        current = EvalJob.read(job.path)
        if current.effective_state not in ("starting", "running"):
            return current
        time.sleep(0.2)
    raise AssertionError(f"job still {current.effective_state} after {deadline} s")


def test_job_reports_progress_then_the_saved_report(quickstart_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = launch_evaluation(quickstart_run.root, ["--pgd", "--eps", "0.1", "--n", "100", "--steps", "5"])
    assert job.path.parent == quickstart_run.evals / "jobs" and job.pid
    assert list_jobs(quickstart_run.evals)[0].path == job.path  # visible to a second UI at once
    done = _wait(job)
    assert done.state == "finished", done.message
    assert done.label == "PGD" and done.done == done.total > 0
    reports = list_reports(quickstart_run.evals)
    assert str(reports[0].path) == done.report
    assert reports[0].attacks == ["PGD"] and reports[0].eps == [0.1]
    assert reports[0].worst["custom 0.1"] < reports[0].clean_accuracy


def test_a_bad_request_fails_with_its_one_line_reason(quickstart_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = launch_evaluation(quickstart_run.root, ["--pgd", "--eps", "2"])
    done = _wait(job)
    assert done.state == "failed"
    assert "larger than the whole [0, 1] pixel range" in done.message
    assert "error:" in done.log.read_text()


def test_a_killed_job_shows_as_crashed(quickstart_run, tmp_path):
    # A process that dies without reporting (SIGKILL, OOM) leaves 'running' behind: the pid tells.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    path = tmp_path / "evals" / "jobs" / "best-x.json"
    path.parent.mkdir(parents=True)
    EvalJob(state="running", pid=proc.pid, checkpoint="c.pt").write(path)
    assert EvalJob.read(path).effective_state == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert EvalJob.read(path).effective_state == "crashed"


def test_launch_refuses_a_missing_checkpoint(tmp_path):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="does not exist"):
        launch_evaluation(tmp_path / "nope.pt", ["--pgd"])
