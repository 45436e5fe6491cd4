"""`?`: the keys of the screen it was opened from, and of the whole app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

_GLOBAL = [("?", "this help"), ("ctrl+p", "command palette: every action by name"), ("escape", "back to the previous screen; closes a menu or dialog"),
           ("tab / shift+tab", "next / previous field"), ("ctrl+q", "quit (training and evaluations keep running)")]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", show=False)]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        lines = [f"[b]{type(self.under).__name__.removesuffix('Screen')} screen[/b]", ""]
        for binding in self.under.BINDINGS:
            b = binding if isinstance(binding, Binding) else Binding(*binding)
            if b.description:
                lines.append(f"  [b]{(b.key_display or b.key):<14}[/b] {b.description}")
        lines += ["", "[b]Everywhere[/b]", ""]
        lines += [f"  [b]{key:<14}[/b] {what}" for key, what in _GLOBAL]
        with VerticalScroll(id="help-box"):
            yield Static("\n".join(lines), id="help-text")
