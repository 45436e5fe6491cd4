"""New run: pick a profile or build one, check it as `workbench train` would, launch it detached or save it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.events import DescendantFocus
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import get_current_worker
from textual.widgets import Button, Footer, Header, Static

from ...errors import WorkbenchError
from ..model import run_form as rf
from ..model.backend_client import BackendError, shared
from ..model.catalog import Catalog
from ..widgets.run_form_view import RunFormView
from .confirm import ConfirmScreen
from .save_profile import SaveProfileScreen

DEBOUNCE = 0.3  # seconds of quiet before the whole config is checked
OK_LINE = "[green]✓ ready to launch[/]"
CHECKING_LINE = "[dim]checking…[/]"


@dataclass
class CatalogLoaded(Message):
    catalog: Catalog | None
    error: str = ""


@dataclass
class ConfigChecked(Message):
    generation: int
    problem: tuple[str, str] | None


@dataclass
class Launched(Message):
    path: Path | None
    error: str = ""


class NewRunScreen(Screen):
    DEFAULT_CSS = """
    NewRunScreen #catalog-state { padding: 0 1; color: $text-muted; }
    NewRunScreen #form-help { height: 1; padding: 0 1; color: $text-muted; background: $boost; }
    """
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("f5", "launch", "Launch", show=False, priority=True),
        Binding("ctrl+s", "save", "Save profile", priority=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.catalog: Catalog | None = None
        self.state = "loading"  # loading | checking | invalid | valid | launching
        self.problem: tuple[str, str] | None = None  # the last whole-config problem (key, message)
        self.generation = 0  # counts edits; a whole-config check answers for one generation
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading datasets, models and defenses…", id="catalog-state")
        # Disabled from the start (nothing to choose until the catalog arrives): disabling it after the
        # mount would restyle every field once more, a visible stall on a busy machine.
        yield RunFormView(id="new-form", disabled=True)
        yield Static("", id="form-help", markup=False)
        yield Footer()

    @property
    def form(self) -> RunFormView:
        return self.query_one(RunFormView)

    def config(self) -> dict:
        return self.form.config()

    def on_mount(self) -> None:
        self.sub_title = "new run"
        self._load_catalog()

    # -- catalog ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="catalog")
    def _load_catalog(self) -> None:
        # The backend process imports torch and the registries; this worker only waits for its reply.
        try:
            self.post_message(CatalogLoaded(shared().run_catalog()))
        except BackendError as exc:
            self.post_message(CatalogLoaded(None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a broken install must show a line, not a traceback
            self.post_message(CatalogLoaded(None, f"{type(exc).__name__}: {exc}"))

    async def on_catalog_loaded(self, message: CatalogLoaded) -> None:
        state = self.query_one("#catalog-state", Static)
        if message.catalog is None:
            state.update(Content.from_markup("[b red]cannot load the catalog:[/] ") + Content(message.error))
            return
        self.catalog = message.catalog
        await self.form.load(message.catalog)
        state.display = False
        self.form.disabled = False
        self.query_one("#profile").focus()

    # -- checking -----------------------------------------------------------------------------
    def on_run_form_view_edited(self, message: RunFormView.Edited) -> None:
        """After any edit: flag bad fields now, check the whole config once the edits pause."""
        self.generation += 1
        if self._timer is not None:
            self._timer.stop()
        values, errors = self.form.collect()
        self.problem = None
        self.state = "invalid" if errors else "checking"
        self.form.show_errors(errors, None, CHECKING_LINE)
        if errors:
            return
        config, generation = self.form.build(values), self.generation
        self._timer = self.set_timer(DEBOUNCE, lambda: self._check(config, generation))

    @work(thread=True, exclusive=True, exit_on_error=False, group="check")
    def _check(self, config: dict, generation: int) -> None:
        try:
            problem = shared().check_config(config)  # `workbench train`'s own check, in the backend
        except BackendError as exc:
            problem = ("", f"cannot check the config: {exc}")
        except Exception as exc:  # noqa: BLE001 - a checker crash is shown as a problem, not a traceback
            problem = ("", f"{type(exc).__name__}: {exc}")
        self.post_message(ConfigChecked(generation, problem))

    def on_config_checked(self, message: ConfigChecked) -> None:
        if message.generation != self.generation or self.state == "launching":
            return  # the form changed since: a newer check is coming
        self.problem = message.problem
        self.state = "invalid" if message.problem else "valid"
        self.form.show_errors({}, message.problem, OK_LINE)

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        self.query_one("#form-help", Static).update(str(event.widget.tooltip or ""))

    # -- actions ------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        elif event.button.id == "save":
            self.action_save()

    def _ready_config(self, what: str) -> dict | None:
        if self.catalog is None:
            self.notify("still loading the catalog", severity="warning")
            return None
        values, errors = self.form.collect()
        if errors:
            key, msg = next(iter(errors.items()))
            self.notify(f"cannot {what}: {key}: {msg}", severity="error", markup=False)
            return None
        return self.form.build(values)

    def action_launch(self) -> None:
        if self.state == "launching":
            return
        if self.form.filling:  # a profile is being written into the fields: launch what it shows when done
            self.set_timer(0.1, self.action_launch)
            return
        config = self._ready_config("launch")
        if config is None:
            return
        if self.state == "invalid" and self.problem is not None:
            key, msg = self.problem
            self.notify(f"cannot launch: {key + ': ' if key else ''}{msg}", severity="error", markup=False)
            return
        # A check still pending is repeated by the launch worker before anything is written.
        self.state = "launching"
        self.query_one("#launch", Button).disabled = True
        self.form.set_line("[dim]launching workbench train…[/]")
        self._launch(config, self.form.device)

    @work(thread=True, exclusive=True, exit_on_error=False, group="launch")
    def _launch(self, config: dict, device: str) -> None:
        worker = get_current_worker()
        try:
            # Polls the cancellation: quitting mid-launch does not wait for the CLI.
            path = rf.launch_training(config, self.app.runs_dir, device, cancelled=lambda: worker.is_cancelled)
        except WorkbenchError as exc:
            self.post_message(Launched(None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - shown in the form, never a traceback
            self.post_message(Launched(None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(Launched(path))

    def on_launched(self, message: Launched) -> None:
        self.query_one("#launch", Button).disabled = False
        if message.path is None:
            self.state = "invalid"
            # The CLI says "<profile.yaml>: key: problem"; the form's own check says "key: problem".
            self.problem = rf.split_error(message.error.split(".yaml: ", 1)[-1])
            self.form.show_errors({}, self.problem, OK_LINE)
            self.notify(f"launch refused: {message.error}", severity="error", markup=False)
            return
        self.state = "launched"
        app = self.app
        if self.is_current:
            self.dismiss()
        else:  # help or the palette is open on top: leave the form underneath, done
            self.form.set_line(f"launched {message.path}")
        app.open_monitor(message.path)

    def action_save(self) -> None:
        config = self._ready_config("save")
        if config is None:
            return

        def write(path: Path) -> None:
            try:
                path.write_text(rf.to_yaml(config), encoding="utf-8")
            except OSError as exc:
                self.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error", markup=False)
                return
            note = f" (but: {self.problem[1]})" if self.problem else ""
            self.notify(f"saved {path}{note}", severity="warning" if note else "information", markup=False)

        def chosen(text: str | None) -> None:
            if not text:
                return
            path = Path(text).expanduser()
            if path.is_dir():
                self.notify(f"{path} is a folder; give a file name", severity="error", markup=False)
            elif path.exists():
                self.app.push_screen(ConfirmScreen(f"Overwrite [b]{escape(str(path))}[/b]?"),
                                     lambda yes: write(path) if yes else None)
            else:
                write(path)

        self.app.push_screen(SaveProfileScreen(f"./{config.get('name') or 'custom'}.yaml"), chosen)

    def action_back(self) -> None:
        self.app.pop_screen()
