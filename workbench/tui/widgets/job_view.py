"""Follows one background evaluation through its job file: state line, progress bar, why it stopped.

The evaluating process writes `evals/jobs/<name>.json`; a thread worker re-reads it every
`app.poll_seconds` and posts what it saw. While it runs, the line is the CLI's progress line
(attack, eps, stage, robust count, elapsed, ETA: `workbench.progress.describe`), aged by the
time since the file was written. A job whose process died without writing its outcome
is "crashed": the tail of its log says why. A cancelled one says so, without the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from ...errors import WorkbenchError
from ...progress.event import EvalProgress, describe
from ...runs.evals import ACTIVE_STATES, EvalJob, cancel_evaluation
from ...runs.tail import tail_lines
from ..model.format import state_markup

DONE = ("finished", "failed", "crashed", "cancelled")
LOG_LINES = 8


@dataclass
class JobSeen(Message):
    path: Path
    job: EvalJob | None
    state: str
    log: list[str]
    error: str = ""  # why this poll could not read the job (the next poll tries again)


class JobView(Vertical):
    DEFAULT_CSS = """
    JobView { height: auto; padding: 0 1; }
    JobView #job-line { height: 1; }
    JobView #job-progress { height: 1; }
    JobView #job-progress Bar { width: 1fr; }
    JobView #job-detail { height: auto; max-height: 10; color: $text-muted; }
    JobView #job-detail.error { color: $error; }
    """

    @dataclass
    class Finished(Message):
        """The followed job ended; `report` is the saved report when it finished."""

        job: EvalJob
        state: str
        report: Path | None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.path: Path | None = None
        self.job: EvalJob | None = None
        self.state = ""
        self.cancelled: set[Path] = set()

    def compose(self) -> ComposeResult:
        yield Static("idle · ^r runs the checked attacks", id="job-line")
        yield ProgressBar(total=None, show_eta=False, id="job-progress")
        yield Static("", id="job-detail")

    def on_mount(self) -> None:
        self.query_one("#job-progress").display = False
        self.query_one("#job-detail").display = False

    # -- what the screen calls ----------------------------------------------------------------
    def show_text(self, text: str) -> None:
        self.query_one("#job-line", Static).update(escape(text))
        self._detail("")

    def show_error(self, text: str) -> None:
        self.query_one("#job-line", Static).update(f"[bold red]{escape(text)}[/]")
        self._detail("")

    def attach(self, path: Path | None) -> None:
        if path is None:
            return
        self.path, self.job, self.state = Path(path), None, ""
        self.query_one("#job-line", Static).update(f"following {escape(Path(path).name)}…")
        self._detail("")
        self._follow(Path(path))

    def cancel(self) -> None:
        if self.job is None:
            self.app.notify("no evaluation running here to cancel", severity="warning")
            return
        if self.state not in ACTIVE_STATES:
            self.app.notify(f"no evaluation running: {self.job.path.stem} is {self.state}", severity="warning")
            return
        try:
            cancel_evaluation(self.job)  # one signal: returns at once
        except WorkbenchError as exc:
            self.app.notify(f"not cancelled: {exc}", severity="warning")
            return
        self.cancelled.add(Path(self.job.path))
        self.app.notify("evaluation cancelled")

    # -- polling ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-job")
    def _follow(self, path: Path) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                job = EvalJob.read(path)
                state = job.effective_state if job is not None else "missing"
                if state == "crashed":
                    # It may have written its outcome between our read and the pid probe: read once more.
                    again = EvalJob.read(path)
                    if again is not None and again.state in DONE:
                        job, state = again, again.state
                log = tail_lines(job.log, LOG_LINES) if job is not None and state in ("crashed", "failed") else []
                self.post_message(JobSeen(path, job, state, log))
                if state in DONE:
                    break
            except Exception as exc:  # noqa: BLE001 - one failed poll is a message; the next one tries again
                self.post_message(JobSeen(path, None, "error", [], f"{type(exc).__name__}: {exc}"))
            if worker.cancelled_event.wait(self.app.poll_seconds):
                break

    def on_job_seen(self, message: JobSeen) -> None:
        message.stop()
        if message.path != self.path:
            return  # an older job's last word
        job, state = message.job, message.state
        self.job, self.state = job, state
        line = self.query_one("#job-line", Static)
        bar = self.query_one("#job-progress", ProgressBar)
        name = escape(message.path.stem)
        if message.error:
            line.update(f"[bold red]cannot read job {name}: {escape(message.error)}[/]")
            bar.display = False
            return
        if job is None:
            line.update(f"[bold red]job file {escape(str(message.path))} is missing or unreadable[/]")
            bar.display = False
            return
        if state in ACTIVE_STATES:
            event = EvalProgress.from_dict(job.event)
            tasks = f" · {job.finished_tasks} attack(s) done" if job.finished_tasks else ""
            bar.display = True
            if event is not None:
                late = max(0.0, self.app.clock() - job.updated)  # the file is as old as its last write
                eta = None if job.eta is None else max(0.0, job.eta - late)
                status = escape(describe(event, job.elapsed + late, eta))
                line.update(f"{state_markup(state)} {name} · {status}{tasks}")
                bar.update(total=job.total or None, progress=event.fraction * job.total)
                return
            task = f" · {escape(job.label)} {job.done}/{job.total}" if job.label else " · loading model and data"
            line.update(f"{state_markup(state)} {name}{task}{tasks}")
            bar.update(total=job.total or None, progress=job.done)
            return
        bar.display = False
        if state == "finished":
            # The report's own name: the job file's was stamped at launch, the report's when it was saved.
            saved = escape(Path(job.report).name) if job.report else f"{name} (no report named)"
            line.update(f"{state_markup('finished')} {saved}")
            self._detail("")
        elif state == "cancelled" or (state == "crashed" and Path(job.path) in self.cancelled):
            # A process signalled before it could record the cancel (still loading) dies without a word.
            line.update(f"{state_markup('cancelled')} {name}")
            self._detail("")
        elif state == "failed":
            line.update(f"{state_markup('failed')} {name}: [red]{escape(job.message or 'no reason given')}[/]")
            self._detail("\n".join(message.log), error=False)
        elif job.pid is None:
            line.update(f"{state_markup('crashed')} {name}: the evaluation process never started · log:")
            self._detail("\n".join(message.log) or f"(empty log: {job.log})", error=True)
        else:
            line.update(f"{state_markup('crashed')} {name}: the evaluation process died without reporting · log:")
            self._detail("\n".join(message.log) or f"(empty log: {job.log})", error=True)
        self.post_message(self.Finished(job, state, Path(job.report) if state == "finished" and job.report else None))

    def _detail(self, text: str, error: bool = False) -> None:
        detail = self.query_one("#job-detail", Static)
        detail.update(escape(text))
        detail.set_class(error, "error")
        detail.display = bool(text)
