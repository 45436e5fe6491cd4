"""`?`: the keys of the screen it was opened from, and of the whole app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

_GLOBAL = [("?", "this help"), ("ctrl+p", "command palette: every action by name"),
           ("escape", "back to the previous screen; closes a menu or dialog"),
           ("tab / shift+tab", "next / previous field"), ("ctrl+q", "quit (training and evaluations keep running)")]


def _key_lines(bindings) -> list[Content]:
    lines = []
    for binding in bindings:
        b = binding if isinstance(binding, Binding) else Binding(*binding)
        if b.description:  # a binding's tooltip is its longer description (the footer has room for the short one)
            key = f"{b.key_display or b.key:<14}"
            lines.append(Content.assemble("  ", (key, "bold"), " ", b.tooltip or b.description))
    return lines


def _own_widgets(screen: Screen) -> list:
    """The screen's widgets from this package that bring keys of their own (e.g. the gallery's zoom); Textual's
    own widgets are left out: their keys are the usual ones."""
    seen, out = set(), []
    for widget in screen.query("*"):
        kind = type(widget)
        if kind.__module__.startswith("workbench.") and kind.__dict__.get("BINDINGS") and kind not in seen:
            seen.add(kind)
            out.append(widget)
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", show=False)]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        # Content, not markup: a key such as "[" (or a description with brackets) is text, never a tag.
        lines = [Content.styled(f"{type(self.under).__name__.removesuffix('Screen')} screen", "bold"), Content("")]
        lines += _key_lines(self.under.BINDINGS)
        for widget in _own_widgets(self.under):
            name = getattr(widget, "HELP_TITLE", type(widget).__name__)
            own = type(widget).__dict__["BINDINGS"]
            lines += [Content(""), Content.styled(f"In the {name}", "bold"), *_key_lines(own)]
        lines += [Content(""), Content.styled("Everywhere", "bold"), Content("")]
        lines += [Content.assemble("  ", (f"{key:<14}", "bold"), " ", what) for key, what in _GLOBAL]
        with VerticalScroll(id="help-box"):
            yield Static(Content("\n").join(lines), id="help-text")
