"""A PlotextPlot that draws named series and repaints when they change."""

from __future__ import annotations

import math
from typing import Sequence

from textual_plotext import PlotextPlot

Series = dict[str, tuple[Sequence[float], Sequence[float]]]
# A fixed colour per series position, so a series with no points yet does not shift the others' colours.
PALETTE = ("cyan+", "orange+", "green+", "magenta+", "blue+", "red+", "yellow+", "gray+")


class LineChart(PlotextPlot):
    """Each chart owns its plotext figure (no module-global plot state).

    plotext only redraws after its data is cleared and re-plotted, and the widget only repaints
    after `refresh()`: `set_series` does all three.
    """

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str, xlabel: str = "", ylabel: str = "", *, ylim: tuple[float, float] | None = None,
                 marker: str = "braille", name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._title, self._xlabel, self._ylabel, self._ylim, self._marker = title, xlabel, ylabel, ylim, marker
        self.series: Series = {}
        self._version = 0  # bumped by every replot: the key of the render cache
        self._cached: tuple[tuple, object] | None = None

    @property
    def points(self) -> int:
        """Points drawn, over all series (what a test or a status line can count)."""
        return sum(len(xs) for xs, _ in self.series.values())

    def on_mount(self) -> None:
        self.replot()

    def set_series(self, series: Series) -> None:
        self.series = {name: (list(xs), list(ys)) for name, (xs, ys) in series.items()}
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(self._title)
        plt.xlabel(self._xlabel)
        plt.ylabel(self._ylabel)
        drawn = False
        for i, (name, (xs, ys)) in enumerate(self.series.items()):
            pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if not pairs:
                continue
            px, py = zip(*pairs)
            draw = plt.scatter if len(pairs) == 1 else plt.plot
            draw(list(px), list(py), label=name, marker=self._marker, color=PALETTE[i % len(PALETTE)])
            drawn = True
        if self._ylim is not None and drawn:
            plt.ylim(*self._ylim)
        self._version += 1
        self.refresh()

    def render(self):
        # Building a plotext figure takes milliseconds of pure Python; a repaint for another reason
        # (a tab switch, a scroll, a neighbour's update) reuses the last build of the same data and size.
        key = (self._version, self.size.width, self.size.height, self.app.theme)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, super().render())
        return self._cached[1]
