"""Attack panel: pick a checkpoint and attacks, run `workbench attack` in the background, read its files.

The evaluation is a detached process (workbench.runs.evals.launch_evaluation) that reports to a
job file; this screen only polls that file, the saved report and the examples file, all from
thread workers. Leaving the screen or the app leaves the evaluation running; opening the panel
on the same checkpoint again re-attaches to it.

The form starts with the settings last launched from the panel (model/remembered_form.py); on the
History tab, `r` reruns the evaluation under the cursor with its settings and `e` only puts them in
the form (model/past_settings.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...errors import WorkbenchError
from ...runs import read_json
from ...runs.evals import (
    ACTIVE_STATES, EvalJob, evals_dir_for, launch_evaluation, list_jobs, list_reports, resolve_checkpoint,
)
from ..model import past_settings, remembered_form, report_view
from ..model.attack_form import PRESETS, AttackForm, FormError, build_args
from ..model.backend_client import shared
from ..model.eval_history import HistoryItem, history_items
from ..widgets.attack_options import AttackOptions
from ..widgets.example_gallery import ExampleGallery
from ..widgets.history_table import HistoryTable
from ..widgets.line_chart import LineChart, toggle_maximized_chart
from ..widgets.job_view import JobView

@dataclass
class HistoryLoaded(Message):
    folder: Path
    items: list[HistoryItem]
    running: list[EvalJob] = field(default_factory=list)
    note: str = ""  # files left out, or why this poll failed (one line)
    failed: bool = False  # the poll failed: keep the rows shown


@dataclass
class ReportLoaded(Message):
    path: Path
    report: dict[str, Any] | None


@dataclass
class ExamplesLoaded(Message):
    report_path: Path
    examples: list
    error: str = ""


@dataclass
class CatalogLoaded(Message):
    catalog: tuple
    presets: dict[str, str]
    error: str = ""  # why there is no catalog (one line)
    remembered: AttackForm | None = None  # the settings last launched from the panel, fitted to the catalog
    dropped: list[str] = field(default_factory=list)  # what of them the catalog no longer has


@dataclass
class PastSettingsRead(Message):
    item: HistoryItem
    settings: past_settings.PastSettings | None
    launch: bool
    error: str = ""


def _run_checkpoints(target: Path | None) -> list[Path]:
    if target is None or not target.is_dir():
        return []
    return [p for p in (target / "checkpoints" / "best.pt", target / "checkpoints" / "last.pt") if p.is_file()]


class AttackScreen(Screen):
    BINDINGS = [
        Binding("ctrl+r,f5", "run", "Run", key_display="^r", priority=True),
        Binding("ctrl+t", "cancel", "Cancel eval", key_display="^t", priority=True),
        # On the History tab only (check_action); before the tab keys, which the tabs' titles show anyway.
        Binding("r", "rerun(True)", "Rerun", tooltip="History: run the evaluation under the cursor again, with its "
                "settings (they only fill the form when some could not be restored)"),
        Binding("e", "rerun(False)", "Fill form", tooltip="History: put the settings of the evaluation under "
                "the cursor in the form, to change them before ^r"),
        Binding("1", "tab('results')", "Results"),
        Binding("2", "tab('chart')", "Chart"),
        Binding("3", "tab('gallery')", "Gallery"),
        Binding("4", "tab('history')", "History"),
        Binding("left_square_bracket", "gallery(-1)", "Prev examples", key_display="[", show=False),
        Binding("right_square_bracket", "gallery(1)", "Next examples", key_display="]", show=False),
        Binding("f", "gallery_filter", "Filter examples (fooled/robust/all)", show=False),
        Binding("m", "maximize_chart", "Max chart", tooltip="the robust-vs-eps chart full-screen (again: back)",
                show=False),
        Binding("ctrl+o", "focus_options", "Options", key_display="^o", show=False),
        Binding("escape", "back", "Back"),
    ]

    # No focus at first: the first look at the history decides which tab is in front and focuses it. (An
    # automatic focus inside a pane, coming late, brought that pane back in front of the Results tab.)
    AUTO_FOCUS = ""

    DEFAULT_CSS = """
    AttackScreen #attack-body { height: 1fr; }
    AttackScreen #attack-main { width: 1fr; height: 1fr; }
    AttackScreen #report-summary { height: auto; padding: 0 1; color: $text-muted; }
    AttackScreen #report-table, AttackScreen #history-table { height: 1fr; }
    AttackScreen TabPane { padding: 0; }
    AttackScreen #history-empty { color: $text-muted; padding: 0 1; height: auto; }
    AttackScreen #history-note { color: $warning; padding: 0 1; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, target: Path | None) -> None:
        super().__init__()
        self.target = Path(target) if target is not None else None
        self.checkpoints = _run_checkpoints(self.target)
        initial = ""
        if self.target is not None:
            try:
                initial = str(resolve_checkpoint(self.target))
            except WorkbenchError:
                initial = ""
        self.evals_dir: Path | None = self._evals_for(initial)
        self.initial_path = initial
        self.report: dict[str, Any] | None = None
        self.report_path: Path | None = None
        self.catalog_ready = False
        self.attack_flags: dict[str, str] = {}  # shorthand flag -> attack, to name the attacks of a job
        self._run_when_ready = False
        self.examples_ready = False
        self._attached_once = False
        self._background_report: Path | None = None  # opened without switching to the Results tab
        self._pristine: AttackForm | None = None  # the form's fields before the user could touch them

    def _evals_for(self, text: str) -> Path | None:
        if text and Path(text).is_file():
            return evals_dir_for(Path(text))  # a run checkpoint's: the run's evals/, whichever checkpoint
        if self.target is not None and self.target.is_dir():
            return self.target / "evals"
        return None

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="attack-body"):
            yield AttackOptions(self.checkpoints, self.initial_path, id="attack-options")
            with Vertical(id="attack-main"):
                yield JobView(id="job-view")
                with TabbedContent(initial="history", id="attack-tabs"):
                    with TabPane("Results 1", id="results"):
                        yield Static("No evaluation shown: check attacks, press ^r (or pick one under History).",
                                     id="report-summary")
                        table = DataTable(id="report-table", cursor_type="row", zebra_stripes=True)
                        for label in report_view.COLUMNS:
                            table.add_column(label, key=label)
                        yield table
                    with TabPane("Chart 2", id="chart"):
                        yield LineChart("robust accuracy vs eps", "eps", "robust accuracy", ylim=(0.0, 1.0),
                                        id="report-chart")
                    with TabPane("Gallery 3", id="gallery"):
                        with VerticalScroll(id="gallery-scroll"):
                            yield ExampleGallery(id="report-gallery")
                    with TabPane("History 4", id="history"):
                        yield Static("", id="history-empty")
                        yield Static("", id="history-note")
                        yield HistoryTable(id="history-table")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"attack · {self.target}" if self.target is not None else "attack"
        self.query_one("#history-note").display = False
        self._pristine = self._plain_fields()
        self.watch_history()
        self.load_catalog()

    # -- history: reports and jobs of the checkpoint's evals/ -----------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-history")
    def watch_history(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            folder = self.evals_dir
            try:
                self.post_message(self._read_history(folder))
            except Exception as exc:  # noqa: BLE001 - one failed poll is a line on the panel; the next one retries
                self.post_message(HistoryLoaded(folder or Path(), [], [], f"cannot read the evaluations: {exc}",
                                                failed=True))
            if worker.cancelled_event.wait(2.0):
                break

    def _read_history(self, folder: Path | None) -> HistoryLoaded:
        if folder is None:
            return HistoryLoaded(Path(), [], [])
        skipped: list[Path] = []
        jobs = [(job, job.effective_state) for job in list_jobs(folder, skipped)]
        items = history_items(list_reports(folder, skipped=skipped), jobs, self.app.clock(), self.attack_flags)
        running = [job for job, state in jobs if state in ACTIVE_STATES]
        note = ""
        if skipped:
            names = ", ".join(sorted(p.name for p in skipped))
            note = f"left out, unreadable: {names}"
        return HistoryLoaded(folder, items, running, note)

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        if message.folder != (self.evals_dir or Path()):
            return  # the checkpoint changed since this was read
        note = self.query_one("#history-note", Static)
        note.update(escape(message.note))
        note.display = bool(message.note)
        if message.failed:
            return
        table = self.query_one(HistoryTable)
        table.show(message.items)
        new = table.items
        empty = self.query_one("#history-empty", Static)
        empty.display = not new
        empty.update("No evaluations of this checkpoint yet." if self.evals_dir else
                     "Choose a checkpoint (a .pt file) to see its evaluations.")
        if not self._attached_once:
            self._attached_once = True
            self._first_view(message)

    def _first_view(self, message: HistoryLoaded) -> None:
        """Which tab the opened panel shows, and the focus in it."""
        latest = self._latest_report(message.items) if self.report_path is None else None
        if message.running:  # reopened while an evaluation runs: follow it again
            self.query_one(JobView).attach(message.running[0].path)
            self.action_tab("results")
        elif not message.items:
            self.action_tab("results")
        elif latest is not None and message.items[0].kind == "report":
            self.open_report(latest.path)  # reopened: the Results tab shows the checkpoint's latest evaluation
        else:
            # A failed, crashed or cancelled job heads the history: that stays in view, the report loads behind it.
            self.action_tab("history")
            if latest is not None:
                self._background_report = latest.path
                self.open_report(latest.path)

    def _latest_report(self, items: list[HistoryItem]) -> HistoryItem | None:
        """The newest saved report of the checkpoint in the form (items come newest first)."""
        name = Path(self.query_one(AttackOptions).checkpoint_text()).name
        return next((i for i in items if i.kind == "report" and i.checkpoint == name), None)

    def _history_item(self) -> HistoryItem | None:
        table = self.query_one(HistoryTable)
        return table.items.get(table.current_key() or "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "history-table":
            return
        item = self.query_one(HistoryTable).items.get(event.row_key.value)
        if item is None:
            return
        if item.kind == "job":
            self.query_one(JobView).attach(item.path)
            self.action_tab("results")
        else:
            self.open_report(item.path)

    def on_attack_options_checkpoint_changed(self, message: AttackOptions.CheckpointChanged) -> None:
        folder = self._evals_for(message.text)
        if folder != self.evals_dir:
            self.evals_dir = folder
            self.query_one(HistoryTable).show([])
            self.watch_history()

    # -- running ------------------------------------------------------------------------------
    def action_run(self) -> None:
        options = self.query_one(AttackOptions)
        text = options.checkpoint_text()
        path = Path(text) if text else None
        if path is None:
            return self._refuse("no checkpoint: choose one or type the path of a .pt file")
        if not path.exists():
            return self._refuse(f"checkpoint {path} does not exist")
        if not path.is_file():
            return self._refuse(f"checkpoint {path} is not a file")
        if not self.catalog_ready:  # the checked attacks are not known yet: run once they are
            self._run_when_ready = True
            self.query_one(JobView).show_text("waiting for the list of attacks…")
            return
        form = options.form()
        try:
            args = build_args(form, tuple(options.catalog.values()))
        except FormError as exc:
            return self._refuse(str(exc))
        self.query_one(JobView).show_text(f"starting: workbench attack {path.name} {' '.join(args)}")
        self.action_tab("results")
        self._launch(path, args, form)

    def _refuse(self, message: str) -> None:
        self.query_one(JobView).show_error(message)
        self.notify(message, severity="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run-button":
            self.action_run()

    @work(thread=True, exit_on_error=False, group="attack-launch")
    def _launch(self, path: Path, args: list[str], form: AttackForm) -> None:
        try:
            remembered_form.save(self.app.runs_dir, form)  # the next panel starts from these settings
        except WorkbenchError as exc:
            self.app.call_from_thread(self.notify, f"settings not remembered: {exc}", severity="warning")
        try:
            job = launch_evaluation(path, args)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is a line on the panel
            self.app.call_from_thread(self._refuse, f"could not start the evaluation: {exc}")
            return
        self.app.call_from_thread(self._follow_job, job.path)

    def _follow_job(self, path: Path | None) -> None:
        self.query_one(JobView).attach(path)  # on the UI thread: widgets are queried there only

    def action_cancel(self) -> None:
        self.query_one(JobView).cancel()

    # -- rerunning a past evaluation ---------------------------------------------------------------
    def action_rerun(self, launch: bool) -> None:
        """The History row's settings into the form; with `launch`, run them again when all were restored
        (else the form waits for ^r, with a line on what it lacks)."""
        item = self._history_item()
        if item is None:
            return self._refuse("no evaluation under the cursor")
        if launch and item.state in ACTIVE_STATES:
            return self._refuse(f"{item.path.name} is still running: e puts its settings in the form")
        options = self.query_one(AttackOptions)
        if not options.catalog:
            return self._refuse("the list of attacks is not loaded: its settings cannot be shown yet")
        choices = (self.evals_dir, tuple(options.catalog.values()), tuple(options.presets))
        if item.args is not None:
            self._show_past(item, past_settings.from_args(item.args, item.recorded_checkpoint, *choices), launch)
        else:
            self._read_past_report(item, launch, choices)

    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-past")
    def _read_past_report(self, item: HistoryItem, launch: bool, choices: tuple) -> None:
        report = read_json(item.path)
        if report is None:
            self.post_message(PastSettingsRead(item, None, launch, f"cannot read {item.path.name}"))
            return
        try:
            settings = past_settings.from_report(report, *choices)
        except Exception as exc:  # noqa: BLE001 - a report nobody foresaw is a line, never a crash
            error = f"cannot read the settings of {item.path.name}: {exc}"
            self.post_message(PastSettingsRead(item, None, launch, error))
            return
        self.post_message(PastSettingsRead(item, settings, launch))

    def on_past_settings_read(self, message: PastSettingsRead) -> None:
        if message.settings is None:
            return self._refuse(message.error)
        self._show_past(message.item, message.settings, message.launch)

    def _show_past(self, item: HistoryItem, settings: past_settings.PastSettings, launch: bool) -> None:
        options = self.query_one(AttackOptions)
        if settings.checkpoint is not None:
            options.set_checkpoint(settings.checkpoint)
        options.set_form(settings.form)
        if launch and settings.complete:
            return self.action_run()  # its line shows the command; the form shows what runs
        lacking = f" · not restored: {', '.join(settings.missing)}" if settings.missing else ""
        self.query_one(JobView).show_text(f"settings of {item.path.name} in the form: ^r runs them{lacking}")
        self.query_one("#run-button", Button).focus()

    def on_job_view_finished(self, message: JobView.Finished) -> None:
        self.watch_history()  # its report is now a past evaluation
        if message.report is not None:
            self.open_report(message.report)

    # -- showing a report -------------------------------------------------------------------
    def open_report(self, path: Path) -> None:
        self.examples_ready = False
        self._read_report(Path(path))

    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-report")
    def _read_report(self, path: Path) -> None:
        self.post_message(ReportLoaded(path, read_json(path)))

    def on_report_loaded(self, message: ReportLoaded) -> None:
        if message.report is None or "results" not in message.report:
            self.notify(f"{message.path} is not a readable evaluation report", severity="error")
            return
        report = message.report
        try:  # report_view tolerates bad values; this guards the UI thread against what it did not foresee
            summary, rows = report_view.summary(report), report_view.table_rows(report)
            series, examples = report_view.series(report), report_view.examples_path(report, message.path)
        except Exception as exc:  # noqa: BLE001 - a bad report is a message, never a crash
            self.notify(f"cannot show {message.path.name}: {exc}", severity="error")
            return
        self.report, self.report_path = report, message.path
        self.query_one("#report-summary", Static).update(escape(f"{message.path.name} · {summary}"))
        table = self.query_one("#report-table", DataTable)
        table.clear()
        for row in rows:
            style = "bold" if row[0] == report_view.WORST else ("cyan" if row[0] == "clean" else "")
            table.add_row(*(Text(cell, style=style) for cell in row))
        self.query_one(LineChart).set_series(series)
        gallery = self.query_one(ExampleGallery)
        if examples is None:
            gallery.set_examples([], "no examples saved with this evaluation (save examples was 0)")
            self.examples_ready = True
        else:
            gallery.set_examples([], "loading examples…")
            self._read_examples(message.path, examples)
        # Show the results, without taking the focus from an option being edited meanwhile.
        if message.path == self._background_report:
            self._background_report = None
            return
        typing = self.focused is not None and self.query_one(AttackOptions) in self.focused.ancestors_with_self
        self.action_tab("results", focus=not typing)

    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-examples")
    def _read_examples(self, report_path: Path, path: Path) -> None:
        try:
            examples = shared().examples(path)  # torch.load runs in the backend process
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a message in the gallery
            self.post_message(ExamplesLoaded(report_path, [], f"cannot read {path}: {exc}"))
            return
        self.post_message(ExamplesLoaded(report_path, examples))

    def on_examples_loaded(self, message: ExamplesLoaded) -> None:
        if message.report_path != self.report_path:
            return  # another report was opened meanwhile
        self.query_one(ExampleGallery).set_examples(message.examples, message.error)
        self.examples_ready = True

    # -- catalog ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="attack-catalog")
    def load_catalog(self) -> None:
        try:
            backend = shared()  # the engine's registries (plugins included) live in the backend process
            catalog, presets = backend.attack_catalog(), backend.attack_presets()
        except Exception as exc:  # noqa: BLE001 - a preset can still run; the panel says why no attacks show
            self.post_message(CatalogLoaded((), {}, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        # Read here, off the UI thread: the file is fitted to this catalog (another process may have written it).
        form, dropped = remembered_form.from_json(remembered_form.load(self.app.runs_dir), catalog,
                                                  tuple({**PRESETS, **presets}))
        self.post_message(CatalogLoaded(catalog, presets, remembered=form, dropped=dropped))

    async def on_catalog_loaded(self, message: CatalogLoaded) -> None:
        options = self.query_one(AttackOptions)
        if message.catalog:
            if not await options.set_catalog(message.catalog, message.presets):
                return  # the panel closed while the catalog was mounted
            self.attack_flags = {m.flag: m.name for m in message.catalog if m.flag}
            self._restore_remembered(message.remembered, message.dropped)
        else:
            options.catalog_failed(message.error or "the backend sent none")
        self.catalog_ready = True
        if self._run_when_ready:
            self._run_when_ready = False
            self.action_run()

    def _plain_fields(self) -> AttackForm:
        """The form without its attacks (they come with the catalog), to see whether it was edited."""
        return replace(self.query_one(AttackOptions).form(), attacks=[], params={})

    def _restore_remembered(self, form: AttackForm | None, dropped: list[str]) -> None:
        if form is None:
            return
        if self._plain_fields() != self._pristine:
            self.notify("the last settings were not restored: the form was edited meanwhile", severity="warning")
            return
        self.query_one(AttackOptions).set_form(form)
        if dropped:
            self.notify(f"last settings restored without {', '.join(dropped)}", severity="warning")

    # -- navigation ---------------------------------------------------------------------------
    def action_tab(self, name: str, focus: bool = True) -> None:
        tabs = self.query_one(TabbedContent)
        switching = tabs.active != name
        tabs.active = name
        if not focus:
            return
        target = {"results": "#report-table", "chart": "#attack-tabs", "gallery": "#gallery-scroll",
                  "history": "#history-table"}[name]
        widget = self.query_one(target)
        if name == "chart":
            widget = tabs.query_one("Tabs")
        if switching:  # a widget of a pane not shown yet cannot take the focus: take it once the pane is shown
            self._focus_when_shown = widget
        widget.focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        widget, self._focus_when_shown = getattr(self, "_focus_when_shown", None), None
        if widget is not None and self.focused is not widget:
            widget.focus()
        self.refresh_bindings()  # r and e show on the History tab only

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "rerun":
            tabs = self.query(TabbedContent)
            return bool(tabs) and tabs.first().active == "history"
        return True

    def action_gallery(self, delta: int) -> None:
        self.query_one(ExampleGallery).step(delta)
        self.query_one(TabbedContent).active = "gallery"

    def action_gallery_filter(self) -> None:
        self.query_one(ExampleGallery).cycle_filter()
        self.query_one(TabbedContent).active = "gallery"

    def action_focus_options(self) -> None:
        boxes = self.query_one("#atk-list").query(Checkbox)
        (boxes.first() if boxes else self.query_one("#ckpt-path")).focus()

    def action_maximize_chart(self) -> None:
        toggle_maximized_chart(self, self.query_one("#report-chart", LineChart), ("#attack-tabs", "chart"))

    def action_back(self) -> None:
        self.app.pop_screen()
