"""Clean / adversarial / amplified-perturbation images of one attack and eps, with predictions."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.geometry import Region
from textual.widget import Widget

from ..model.examples_view import FILTERS, Example, amplified_perturbation, group_label, groups, select
from ..screens.example_zoom import ExampleZoom
from .image_grid import image_row

TITLES = ("clean", "adversarial", "perturbation")
MARK = "▶ "  # before the selected example's caption


class ExampleGallery(Widget, can_focus=True):
    """Shows the examples of the selected (protocol, attack, eps) group; `step(±1)` changes the group,
    `cycle_filter()` shows all (fooled first), only the fooled or only the robust ones. Up and down select
    an example, enter or z opens it enlarged (`ExampleZoom`), as does a double click.

    The image scale follows the widget's width, so 8x8 digits are legible on a wide terminal and
    three of them still fit side by side at 80 columns.
    """

    HELP_TITLE = "gallery (tab 3)"  # the help screen's heading for these keys
    BINDINGS = [
        Binding("down", "select(1)", "Next example", show=False),
        Binding("up", "select(-1)", "Previous example", show=False),
        Binding("enter,z", "zoom", "Zoom", key_display="z"),
        Binding("shift+tab", "focus_previous", show=False),
    ]

    DEFAULT_CSS = """
    ExampleGallery { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.examples: list[Example] = []
        self.groups: list[tuple] = []
        self.index = 0
        self.cursor = 0  # the selected example, in `shown`
        self._leaving = False  # handing the focus back (see on_mount)
        self.filter = FILTERS[0]
        self.message = "no examples (run with save examples > 0)"

    def on_mount(self) -> None:
        # The screen focuses the scroll container that holds the gallery (its tab's target), but the keys that
        # select and zoom are the gallery's: the gallery takes that focus, except while it hands it back.
        if isinstance(self.parent, ScrollableContainer):
            self.watch(self.screen, "focused", self._take_focus, init=False)

    def _take_focus(self, focused: Widget | None) -> None:
        if focused is self.parent and not self._leaving:
            self.focus(scroll_visible=False)

    def action_focus_previous(self) -> None:
        """shift+tab: past the container too, which would hand the focus straight back."""
        self._leaving = True
        try:
            self.screen.focus_previous()
            if self.screen.focused is self.parent:
                self.screen.focus_previous()
        finally:
            self._leaving = False

    def set_examples(self, examples: list[Example], message: str = "") -> None:
        self.examples = examples
        self.groups = groups(examples)
        self.index = self.cursor = 0
        self.message = message or ("no examples in this evaluation (save examples was 0)" if not examples else "")
        self.refresh(layout=True)

    def step(self, delta: int) -> None:
        if self.groups:
            self.index = (self.index + delta) % len(self.groups)
            self.cursor = 0
            self.refresh(layout=True)

    def cycle_filter(self) -> str:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self.cursor = 0
        self.refresh(layout=True)
        return self.filter

    @property
    def current_label(self) -> str:
        if not self.groups:
            return ""
        several = len({g[0] for g in self.groups}) > 1
        return group_label(self.groups[self.index], several)

    @property
    def shown(self) -> list[Example]:
        if not self.groups:
            return []
        return select(self._group(), self.filter)

    @property
    def selected(self) -> Example | None:
        shown = self.shown
        return shown[min(self.cursor, len(shown) - 1)] if shown else None

    def _group(self) -> list[Example]:
        return [e for e in self.examples if e.group == self.groups[self.index]]

    def _scale(self, example: Example) -> int:
        width = max(len(example.clean[0]) if example.clean else 1, 1)
        room = max(self.size.width - 2, 0) - 2 * (len(TITLES) - 1)
        return max(1, min(4, room // (len(TITLES) * width)))

    # -- selecting and zooming ------------------------------------------------------------------
    def action_select(self, delta: int) -> None:
        shown = self.shown
        if shown:
            self.cursor = max(0, min(len(shown) - 1, self.cursor + delta))
            self.refresh()
            self._scroll_to_selected()

    def action_zoom(self) -> None:
        shown = self.shown
        if shown:
            self.app.push_screen(ExampleZoom(shown, min(self.cursor, len(shown) - 1), self.current_label))

    def on_click(self, event: events.Click) -> None:
        spans = self._spans()
        hit = next((i for i, (top, height) in enumerate(spans) if top <= event.y < top + height), None)
        if hit is None:
            return
        self.cursor = hit
        self.refresh()
        if event.chain >= 2:
            self.action_zoom()

    def _spans(self) -> list[tuple[int, int]]:
        """(first line, lines) of each shown example within the widget, as `render` lays them out."""
        parts = self._parts()
        width = max(self.content_region.width, 1)
        console = self.app.console
        options = console.options.update_width(width)
        heights = [len(console.render_lines(p, options, pad=False)) for p in parts]
        tops = [sum(heights[:i]) for i in range(len(heights))]
        first = len(parts) - len(self.shown)  # the header lines come before the examples
        return [(tops[i], heights[i]) for i in range(first, len(parts))]

    def _scroll_to_selected(self) -> None:
        spans = self._spans()
        if isinstance(self.parent, ScrollableContainer) and self.cursor < len(spans):
            top, height = spans[self.cursor]
            if self.cursor == 0:  # the first example brings the header (group, counts, keys) back too
                top, height = 0, top + height
            region = Region(0, self.virtual_region.y + top, self.size.width, height)
            self.parent.scroll_to_region(region, animate=False, immediate=True)

    # -- drawing --------------------------------------------------------------------------------
    def _header(self) -> Text:
        group = self._group()
        fooled = sum(e.fooled for e in group)
        return Text.assemble(("[ ", "dim"), (self.current_label, "bold"),
                             (f"  {self.index + 1}/{len(self.groups)} ]  ", "dim"),
                             (f"fooled {fooled}/{len(group)}", "bold red" if fooled else "green"),
                             (f" · showing {self.filter} · f filter · [ and ] switch", "dim"),
                             (" · ↑↓ select · z zoom", "dim"))

    def _example_row(self, i: int, ex: Example, selected: bool) -> RenderableType:
        style = "bold red" if ex.fooled else "green"
        caption = Text.assemble((MARK, "bold") if selected else "", (ex.caption(), style),
                                overflow="ellipsis", no_wrap=True)
        if selected and self.has_focus:
            caption.stylize("reverse", len(MARK))
        images = [ex.clean, ex.adversarial, amplified_perturbation(ex.clean, ex.adversarial)]
        scale = self._scale(ex)
        # One width per column on every row: the first row's titles must not push its images right.
        side = max(len(ex.clean[0]) if ex.clean else 0, 1) * scale
        widths = [max(side, len(t)) for t in TITLES]
        return image_row(images, TITLES if i == 0 else (), caption, scale=scale, widths=widths)

    def _parts(self) -> list[RenderableType]:
        if not self.groups:
            return [Text(self.message, style="dim")]
        parts: list[RenderableType] = [self._header()]
        shown = self.shown
        if not shown:
            parts.append(Text(f"no {self.filter} examples in this group (f shows the others)", style="dim"))
        cursor = min(self.cursor, len(shown) - 1)
        parts += [self._example_row(i, ex, i == cursor) for i, ex in enumerate(shown)]
        return parts

    def render(self) -> RenderableType:
        return Group(*self._parts())  # Widget repaints on focus and blur: the selection's highlight follows
