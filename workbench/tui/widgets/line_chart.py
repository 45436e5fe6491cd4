"""A PlotextPlot that draws named series and repaints when they change."""

from __future__ import annotations

import math
from typing import Iterable, Literal, Sequence

from rich.style import Style
from rich.text import Text
from textual_plotext import PlotextPlot

from ..model.ticks import integer_ticks, percent_ticks, value_ticks

Series = dict[str, tuple[Sequence[float], Sequence[float]]]
# A fixed colour per series position, so a series with no points yet does not shift the others' colours.
PALETTE = ("cyan+", "orange+", "green+", "magenta+", "blue+", "red+", "yellow+", "gray+")
# plotext's colour names are the 16 ANSI colours; the header legend draws the same ones.
ANSI = {"black": 0, "gray": 8, "gray+": 7, "red": 1, "red+": 9, "green": 2, "green+": 10, "orange": 3,
        "orange+": 11, "yellow+": 11, "blue": 4, "blue+": 12, "magenta": 5, "magenta+": 13, "cyan": 6, "cyan+": 14}
# A point of a series marked sparse (measured every few epochs): one whole cell, not a braille dot.
POINT_MARKER = "●"
# Cells of the y tick labels and axis, and rows of the x axis and its labels, around the plot area.
Y_AXIS_CELLS, X_AXIS_ROWS = 6, 2


class LineChart(PlotextPlot):
    """Each chart owns its plotext figure (no module-global plot state).

    plotext only redraws after its data is cleared and re-plotted, and the widget only repaints
    after `refresh()`: `set_series` does all three.

    The defaults draw as plotext does (legend inside the plot, plotext's ticks). Opt in with
    `legend="header"` (title and a coloured legend on the first line, off the data), `xticks="integer"`
    (whole-number ticks: epochs), `yticks="round"` or `"percent"` (steps of 1, 2, 5 × 10^k; 0-100 %).
    """

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str, xlabel: str = "", ylabel: str = "", *, ylim: tuple[float, float] | None = None,
                 marker: str = "braille", legend: Literal["inside", "header"] = "inside",
                 xticks: Literal["auto", "integer"] = "auto", yticks: Literal["auto", "round", "percent"] = "auto",
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._title, self._xlabel, self._ylabel, self._ylim, self._marker = title, xlabel, ylabel, ylim, marker
        self._legend, self._xticks, self._yticks = legend, xticks, yticks
        self.series: Series = {}
        self.marked: set[str] = set()  # series drawn with a visible marker at each point
        self.xlim: tuple[float, float] | None = None
        self._version = 0  # bumped by every replot: the key of the render cache
        self._cached: tuple[tuple, object] | None = None

    @property
    def points(self) -> int:
        """Points drawn, over all series (what a test or a status line can count)."""
        return sum(len(xs) for xs, _ in self.series.values())

    def on_mount(self) -> None:
        self.replot()

    def set_series(self, series: Series, *, marked: Iterable[str] = (),
                   xlim: tuple[float, float] | None = None) -> None:
        """Replace the series; `marked` ones get a marker at every point; `xlim` fixes the x range."""
        self.series = {name: (list(xs), list(ys)) for name, (xs, ys) in series.items()}
        self.marked = set(marked) & set(self.series)
        self.xlim = xlim
        self.replot()

    def _pairs(self, xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
        return [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]

    def replot(self) -> None:
        """Re-plot the data; the axes' ticks follow the size, so `render` sets them (see `_axes`)."""
        plt = self.plt
        plt.clear_data()
        header = self._legend == "header"
        plt.title("" if header else self._title)
        plt.xlabel(self._xlabel)
        plt.ylabel(self._ylabel)
        drawn = False
        for i, (name, (xs, ys)) in enumerate(self.series.items()):
            pairs = self._pairs(xs, ys)
            if not pairs:
                continue
            px, py = (list(v) for v in zip(*pairs))
            color = PALETTE[i % len(PALETTE)]
            label = None if header else name
            if name in self.marked:
                if len(pairs) > 1:
                    plt.plot(px, py, marker=self._marker, color=color)
                plt.scatter(px, py, label=label, marker=POINT_MARKER, color=color)
            else:
                draw = plt.scatter if len(pairs) == 1 else plt.plot
                draw(px, py, label=label, marker=self._marker, color=color)
            drawn = True
        if self._ylim is not None and drawn:
            plt.ylim(*self._ylim)
        self._version += 1
        self.refresh()

    def _axes(self, width: int, height: int) -> None:
        """Round ticks for a plot area of this size (opted-in charts only); fixed x range if given."""
        values = [p for xs, ys in self.series.values() for p in self._pairs(xs, ys)]
        if not values:
            return
        plt = self.plt
        x_lo, x_hi = self.xlim or (min(x for x, _ in values), max(x for x, _ in values))
        if self.xlim is not None:
            plt.xlim(*self.xlim)
        if self._xticks == "integer":
            # Labels like "150" need about 8 cells between them.
            plt.xticks(*integer_ticks(x_lo, x_hi, max(1, (width - Y_AXIS_CELLS) // 8)))
        rows = max(1, height - X_AXIS_ROWS - (1 if self._legend == "header" else 2))  # less the top border
        most = max(1, rows // 2)  # a label every other row at least: labels on adjacent rows read as one
        if self._yticks == "percent":
            ticks = percent_ticks(most)
            plt.ylim(0.0, 1.0)
            plt.yticks(*ticks)
        elif self._yticks == "round":
            lo, hi = min(y for _, y in values), max(y for _, y in values)
            ylim, values, labels = value_ticks(lo, hi, most)
            plt.ylim(*ylim)
            if values:
                plt.yticks(values, labels)

    def legend_text(self, width: int) -> Text:
        """The header line: the title and, in each series' colour, its glyph and name."""
        line = Text(self._title, style=Style(bold=True, reverse=self.has_focus), end="")
        for i, name in enumerate(self.series):
            color = ANSI.get(PALETTE[i % len(PALETTE)], 15)
            glyph = POINT_MARKER if name in self.marked else "━"
            line.append("  ")
            line.append(glyph, style=Style(color=f"color({color})"))
            line.append(f" {name}")
        line.truncate(width, overflow="ellipsis")
        return line

    def render(self):
        # Building a plotext figure takes milliseconds of pure Python; a repaint for another reason
        # (a tab switch, a scroll, a neighbour's update) reuses the last build of the same data and size.
        key = (self._version, self.size.width, self.size.height, self.app.theme, self.has_focus)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._build())
        return self._cached[1]

    def _build(self):
        width, height = self.size.width, self.size.height
        if self._legend != "header":
            if self._xticks != "auto" or self._yticks != "auto" or self.xlim is not None:
                self._axes(width, height)
            return super().render()
        # As PlotextPlot.render, one row shorter: the header line takes the first.
        body = max(1, height - 1)
        self._axes(width, body)
        self._plot.plotsize(width, body)
        self._plot._set_size(width, body)
        self._plot.theme(self._get_plotext_theme_name(self.app.theme))
        text = Text("\n", end="").join([self.legend_text(width), Text.from_ansi(self._plot.build(), end="")])
        return text

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def toggle_maximized_chart(screen, fallback: LineChart, tab: tuple[str, str] | None = None) -> None:
    """`m` on any screen with charts: the focused chart (else `fallback`) full-screen, or back if one is.

    `tab` = (TabbedContent selector, pane id) to bring the charts' tab in front first."""
    if screen.maximized is not None:
        screen.minimize()
        return
    if tab is not None:
        screen.query_one(tab[0]).active = tab[1]
    focused = screen.focused
    chart = focused if isinstance(focused, LineChart) else fallback
    chart.can_focus = True  # a maximised widget must hold the focus, or escape/m would not reach the screen
    chart.focus()
    screen.maximize(chart, container=False)
