"""A PlotextPlot that draws named series and repaints when they change."""

from __future__ import annotations

import math
from typing import Sequence

from textual_plotext import PlotextPlot

Series = dict[str, tuple[Sequence[float], Sequence[float]]]


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
        for name, (xs, ys) in self.series.items():
            pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if not pairs:
                continue
            px, py = zip(*pairs)
            if len(pairs) == 1:
                plt.scatter(list(px), list(py), label=name, marker=self._marker)
            else:
                plt.plot(list(px), list(py), label=name, marker=self._marker)
            drawn = True
        if self._ylim is not None and drawn:
            plt.ylim(*self._ylim)
        self.refresh()
