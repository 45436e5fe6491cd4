"""The Textual application: screen navigation and the command palette; the screens do the work."""

from __future__ import annotations

import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

BACKEND_WARM_DELAY = 1.0  # seconds after mount: after the first paint with data (~0.5 s)


def _warm_backend(app: App) -> None:
    from .model.backend_client import BackendError, shared

    if not app.is_running:  # exit has begun: nobody would close it
        return
    with suppress(BackendError):  # the first request starts it again and says why it cannot
        shared().start()


class WorkbenchApp(App):
    """`workbench tui`. Screens reach each other through the `open_*` methods below."""

    CSS_PATH = "app.tcss"
    TITLE = "workbench"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False),
    ]

    def __init__(self, runs_dir: Path | str = Path("runs"), *, clock: Callable[[], float] = time.time,
                 poll_seconds: float = 0.25) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.clock = clock  # fixed in snapshot tests, so ages do not change between runs
        self.poll_seconds = poll_seconds  # how often file-tail workers look for new lines
        self.sub_title = str(self.runs_dir)

    def on_mount(self) -> None:
        from .screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        # Start the backend (torch work, another process) once the home screen has painted, so the first form
        # finds it ready; Popen runs in a thread so even the fork never delays a frame.
        self.set_timer(BACKEND_WARM_DELAY, lambda: self.run_worker(partial(_warm_backend, self), thread=True,
                                                                   exit_on_error=False, group="backend"))

    def on_unmount(self) -> None:
        from .model.backend_client import close_shared

        close_shared()  # the backend would also exit on its own when our end of its stdin closes

    # -- navigation ---------------------------------------------------------------------------
    def open_monitor(self, run: Path) -> None:
        from .screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(Path(run)))

    def open_new_run(self) -> None:
        from .screens.new_run import NewRunScreen

        self.push_screen(NewRunScreen())

    def open_attack(self, target: Path | None = None) -> None:
        """The attack panel on a run folder or a checkpoint file (or none: pick a path there)."""
        from .screens.attack import AttackScreen

        self.push_screen(AttackScreen(Path(target) if target is not None else None))

    def open_compare(self, runs: list[Path]) -> None:
        from .screens.compare import CompareScreen

        self.push_screen(CompareScreen([Path(r) for r in runs]))

    def open_suites(self) -> None:
        from .screens.suites import SuitesScreen

        self.push_screen(SuitesScreen())

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    # -- command palette: every binding of the screen below is also a command ----------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen = set()
        for node in (screen, self):
            for binding in node.BINDINGS:
                b = binding if isinstance(binding, Binding) else Binding(*binding)
                if not b.description or b.action in seen or b.action in ("quit", "app.quit", "command_palette"):
                    continue
                seen.add(b.action)
                key = b.key_display or b.key
                where = "everywhere" if node is self else type(node).__name__.removesuffix("Screen").lower()
                yield SystemCommand(b.description, f"{where} · key {key}",
                                    partial(self.call_later, node.run_action, b.action))
