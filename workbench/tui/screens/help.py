"""`?`: the keys of the screen it was opened from, and of the whole app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
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
        # Content, not markup: a key such as "[" (or a description with brackets) is text, never a tag.
        lines = [Content.styled(f"{type(self.under).__name__.removesuffix('Screen')} screen", "bold"), Content("")]
        for binding in self.under.BINDINGS:
            b = binding if isinstance(binding, Binding) else Binding(*binding)
            if b.description:
                lines.append(Content.assemble("  ", (f"{b.key_display or b.key:<14}", "bold"), " ", b.description))
        lines += [Content(""), Content.styled("Everywhere", "bold"), Content("")]
        lines += [Content.assemble("  ", (f"{key:<14}", "bold"), " ", what) for key, what in _GLOBAL]
        with VerticalScroll(id="help-box"):
            yield Static(Content("\n").join(lines), id="help-text")
