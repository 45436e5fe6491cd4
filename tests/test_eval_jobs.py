"""Background evaluation jobs: what the TUI's attack panel launches and follows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import json
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.progress import EvalProgress
from workbench.runs import evals
from workbench.runs.evals import (
    EvalJob, JobReporter, cancel_evaluation, launch_evaluation, list_jobs, list_reports, summarize_report,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait(job: EvalJob, deadline: float = 120.0, until=lambda j: j.effective_state not in ("starting", "running")
          ) -> EvalJob:
    end = time.time() + deadline
    while time.time() < end:
        current = EvalJob.read(job.path)
        if until(current):
            return current
        time.sleep(0.1)
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
    assert done.log.read_text().count("error:") == 1  # written before "failed", and only once


def test_a_killed_job_shows_as_crashed(tmp_path):
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
    with pytest.raises(WorkbenchError, match="does not exist"):
        launch_evaluation(tmp_path / "nope.pt", ["--pgd"])


def test_a_cancelled_evaluation_records_cancelled(quickstart_run, monkeypatch):
    # Long enough to be cancelled mid-attack: 2000 PGD steps at a small eps (few samples fooled, no early end).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = launch_evaluation(quickstart_run.root, ["--pgd", "--eps", "0.01", "--steps", "2000", "--n", "359",
                                                  "--device", "cpu"])
    running = _wait(job, until=lambda j: j.effective_state != "starting" and (j.label or j.state != "running"))
    assert running.state == "running" and running.label == "PGD", running.message
    cancel_evaluation(running)
    done = _wait(job, deadline=60.0)
    assert done.state == "cancelled" and done.effective_state == "cancelled"
    assert done.report is None
    with pytest.raises(WorkbenchError, match="no evaluation running"):
        cancel_evaluation(done)  # nothing left to signal: says so instead of pretending


def test_cancel_sends_nothing_to_a_job_that_is_not_running(tmp_path):
    path = tmp_path / "jobs" / "j.json"
    path.parent.mkdir()
    EvalJob(state="finished", pid=os.getpid()).write(path)
    with pytest.raises(WorkbenchError, match="no evaluation running \\(it is finished\\)"):
        cancel_evaluation(EvalJob.read(path))
    EvalJob(state="running", pid=os.getpid(), host="another-host").write(path)
    with pytest.raises(WorkbenchError, match="runs on another-host"):
        cancel_evaluation(EvalJob.read(path))  # never signal a local pid for a job of another machine


def test_a_launch_that_cannot_start_the_process_records_failed(tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")

    def no_process(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(evals.subprocess, "Popen", no_process)
    with pytest.raises(WorkbenchError, match="could not start the evaluation process: .*Too many open files"):
        launch_evaluation(ckpt, ["--pgd"])
    [job] = list_jobs(tmp_path / "run" / "evals")
    assert job.state == job.effective_state == "failed" and "Too many open files" in job.message


def test_the_launcher_never_overwrites_what_the_child_reported(tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")

    class FastChild:  # reports its outcome before the launcher records the pid
        pid = 4242

        def __init__(self, cmd, **kwargs):
            job_file = Path(cmd[cmd.index("--job-file") + 1])
            job = EvalJob.read(job_file)
            job.state, job.pid, job.message = "failed", 4343, "bad request"
            job.write(job_file)

    monkeypatch.setattr(evals.subprocess, "Popen", FastChild)
    job = launch_evaluation(ckpt, ["--pgd"])
    assert (job.state, job.pid, job.message) == ("failed", 4343, "bad request")


def test_starting_without_a_pid_long_after_launch_is_crashed(tmp_path):
    path = tmp_path / "j.json"
    EvalJob(state="starting").write(path)
    assert EvalJob.read(path).effective_state == "starting"  # just launched
    path.write_text(json.dumps({**json.loads(path.read_text()), "started": time.time() - 60,
                                "updated": time.time() - 60}))
    assert EvalJob.read(path).effective_state == "crashed"  # the launcher died before recording the process


def test_progress_counts_every_finished_attack_and_writes_the_stage_and_eta(tmp_path):
    path = tmp_path / "j.json"
    EvalJob().write(path)
    clock = [0.0]
    reporter = JobReporter(path, clock=lambda: clock[0])
    writes = []
    reporter.job.write = lambda p, write=reporter.job.write: (writes.append(clock[0]), write(p))
    seen = []
    for label in ("FGSM", "PGD", "PGD", "C&W"):  # PGD twice: also in the strong protocol
        start = EvalProgress("spec_start", label, total=10)
        events = [start] + [replace(start, kind="step", rows=10, stage=label.lower(), step=k, steps=100, robust=9,
                                    attacked=10) for k in range(100)]
        events += [replace(start, kind=kind, done=10, robust=7, attacked=10) for kind in ("chunk_end", "pass_end",
                                                                                            "spec_end")]
        for ev in events:
            clock[0] += 0.01
            reporter.progress(ev)
        seen.append(reporter.job.finished_tasks)
    assert seen == [1, 2, 3, 4]
    # Rate-limited: 416 events over 4.16 s, written every 0.25 s and at every pass and attack end.
    assert len(writes) <= 4.16 / 0.25 + 1 + 2 * 4
    job = EvalJob.read(path)
    assert job.finished_tasks == 4 and (job.label, job.done, job.total) == ("C&W", 10, 10)
    assert EvalProgress.from_dict(job.event).kind == "spec_end" and job.elapsed == pytest.approx(4.15)
    clock[0] += 0.3
    reporter.progress(replace(start, kind="step", rows=10, stage="cw", step=50, steps=100, robust=9, attacked=10))
    job = EvalJob.read(path)
    # C&W began at 3.13 s; at 4.46 s half of it is done, so as much again is left.
    assert EvalProgress.from_dict(job.event).step == 50 and job.eta == pytest.approx(1.33)
    reporter.cancel()
    assert EvalJob.read(path).state == "cancelled"


def _report(**fields) -> dict:
    return {"checkpoint": "runs/a/checkpoints/best.pt", "created": 1700000000.0, "n": 100, "clean_accuracy": 0.9,
            "protocols": [{"name": "custom"}], "results": [{"protocol": "custom", "label": "PGD", "eps": 0.1,
                                                            "robust_accuracy": 0.5}],
            "worst_case": [{"protocol": "custom", "eps": 0.1, "robust_accuracy": 0.5}], **fields}


def test_summarize_report_reads_each_field_on_its_own():
    old = summarize_report(Path("old.json"), _report(
        created="2024-01-02T03:04:05", n="all", protocols=None, worst_case=None, clean_accuracy="high",
        results=[{"label": "FGSM", "eps": "0.1"}, 5, None, {"attack": "pgd", "eps": 0.2, "robust_accuracy": None}],
        examples=7, checkpoint=None))
    assert old.created > 1.7e9 and old.n == 0 and old.protocols == [] and old.worst == {}
    assert old.clean_accuracy is None and old.attacks == ["FGSM", "pgd"] and old.eps == [0.2]
    assert old.examples is None and old.checkpoint == ""
    bare = summarize_report(Path("bare.json"), {"results": None, "created": "last week", "protocols": "x"})
    assert (bare.created, bare.attacks, bare.eps, bare.protocols, bare.n) == (0.0, [], [], [], 0)
    good = summarize_report(Path("good.json"), _report())
    assert good.worst == {"custom 0.1": 0.5} and good.protocols == ["custom"] and good.n == 100


def test_one_bad_file_never_hides_the_others(tmp_path):
    folder = tmp_path / "evals"
    (folder / "jobs").mkdir(parents=True)
    (folder / "good.json").write_text(json.dumps(_report()))
    (folder / "old.json").write_text(json.dumps(_report(created="2023-01-02", n="all", worst_case=None)))
    (folder / "corrupt.json").write_text('{"results": [')
    (folder / "audit.json").write_text(json.dumps({"verdict": "ok"}))  # not a report: not listed, not an error
    (folder / "reserved.json").write_text("")  # a name just reserved: being written
    skipped: list[Path] = []
    reports = list_reports(folder, skipped=skipped)
    assert [r.path.name for r in reports] == ["good.json", "old.json"]
    assert [p.name for p in skipped] == ["corrupt.json"]
    assert [r.path.name for r in list_reports(folder, checkpoint="best.pt")] == ["good.json", "old.json"]

    jobs = folder / "jobs"
    (jobs / "good.json").write_text(json.dumps({"state": "failed", "started": 1700000000.0, "args": ["--pgd"]}))
    (jobs / "odd.json").write_text(json.dumps({"state": "failed", "started": "yesterday", "args": "--pgd",
                                               "pid": "12", "done": "x", "message": 7, "report": 3}))
    (jobs / "null.json").write_text(json.dumps({"state": "running", "started": None, "pid": True, "updated": None}))
    (jobs / "unknown.json").write_text(json.dumps({"state": "paused"}))
    (jobs / "broken.json").write_text("{")
    skipped = []
    listed = list_jobs(folder, skipped)
    assert [j.path.name for j in listed] == ["good.json", "odd.json", "null.json"]
    odd = listed[1]
    assert (odd.started, odd.args, odd.pid, odd.done, odd.message, odd.report) == (0.0, [], None, 0, "", None)
    assert listed[2].effective_state == "crashed"  # "running" without a process, long ago: not followed forever
    assert sorted(p.name for p in skipped) == ["broken.json", "unknown.json"]
