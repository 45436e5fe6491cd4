"""The monitor's log and config views: they keep the raw text and lay it out again when their width changes."""

from __future__ import annotations

from textual.widgets import Log, Static

from ..model.run_text import config_for_display, hanging_wrap

SCROLLBAR_CELLS = 2  # the vertical scrollbar's width in Textual's default theme


class WrappedLog(Log):
    """A Log whose long lines wrap with a hanging indent instead of running off the right edge."""

    def __init__(self, *, max_lines: int | None = None, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, id=id)
        self.raw_lines: list[str] = []
        self._wrapped_at = -1

    def show_lines(self, lines: list[str]) -> None:
        self.raw_lines = list(lines)
        self._wrap_text()

    def _text_width(self) -> int:
        return max(0, self.size.width - SCROLLBAR_CELLS)

    def _wrap_text(self) -> None:
        self._wrapped_at = self._text_width()
        self.clear()
        self.write_lines(hanging_wrap(self.raw_lines, self._wrapped_at))

    def on_resize(self) -> None:
        # Hidden in another tab the width is 0 (lines kept whole); shown, it gets its real width here.
        if self._text_width() != self._wrapped_at:
            self._wrap_text()


class ConfigView(Static):
    """config.yaml in block style, folded to the view's width, YAML-highlighted."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.raw_text = ""
        self.shown_text = ""  # what the view shows: the block-style config at its width
        self._wrapped_at = -1

    def show_text(self, text: str) -> None:
        self.raw_text = text
        self._wrap_text()

    def _wrap_text(self) -> None:
        from rich.syntax import Syntax  # rich is Textual's own dependency; the highlighter costs nothing until used

        self._wrapped_at = self.size.width
        self.shown_text = config_for_display(self.raw_text, self._wrapped_at - SCROLLBAR_CELLS) if self.raw_text else ""
        self.update(Syntax(self.shown_text, "yaml", theme="ansi_dark", word_wrap=True))

    def on_resize(self) -> None:
        if self.size.width != self._wrapped_at:
            self._wrap_text()
