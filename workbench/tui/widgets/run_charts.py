"""The Run monitor's charts: accuracy (clean, robust, train), train loss and learning rate per epoch, loss per step.

Above them, one line says how often the trainer measures what the accuracy chart shows (from the
run's config.yaml): robust accuracy every few epochs is a handful of points, drawn as markers.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Static

from ..model.history import History, Series, downsample
from .line_chart import LineChart

# A braille cell is two dots wide: more points than that per cell draw nothing new, and plotext
# pays for every point (0.4 s for the 50k steps of a long run, on the UI thread).
POINTS_PER_CELL = 2
WIDTH_BEFORE_LAYOUT = 100  # cells, until the chart has a size


def sparse(xs: list[float]) -> bool:
    """A series to draw with a marker at each point: two points or fewer, or measured every few epochs."""
    return len(xs) <= 2 or any(b - a > 1 for a, b in zip(xs, xs[1:]))


class RunCharts(Vertical):
    """The cadence line, then a 2×2 grid: accuracy | train loss per epoch, loss per step | learning rate.

    Each chart takes the focus (tab), so the monitor can maximise the focused one.
    """

    DEFAULT_CSS = """
    RunCharts { height: 1fr; }
    RunCharts > #chart-cadence { height: 1; padding: 0 1; color: $text-muted; display: none; }
    RunCharts > Grid { grid-size: 2 2; grid-rows: 1fr 1fr; grid-columns: 1fr 1fr; height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: History | None = None
        self._epochs = 0
        self._widths: tuple[int, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static("", id="chart-cadence", markup=False)
        with Grid(id="chart-grid"):
            yield LineChart("accuracy", yticks="percent", **self._epoch_axes(), id="chart-accuracy")
            yield LineChart("train loss", yticks="round", **self._epoch_axes(), id="chart-loss")
            yield LineChart("train loss per step", yticks="round", legend="header", xticks="integer",
                            id="chart-steps")
            yield LineChart("learning rate", yticks="round", **self._epoch_axes(), id="chart-lr")

    @staticmethod
    def _epoch_axes() -> dict:
        return {"legend": "header", "xticks": "integer"}

    def on_mount(self) -> None:
        for chart in self.query(LineChart):
            chart.can_focus = True

    @property
    def charts(self) -> list[LineChart]:
        return list(self.query(LineChart))

    def set_cadence(self, text: str) -> None:
        """The line above the charts (how often clean and robust accuracy are measured); '' hides it."""
        line = self.query_one("#chart-cadence", Static)
        line.update(text)
        line.display = bool(text)

    def show(self, history: History, epochs: int = 0) -> None:
        """Redraw all charts from the history (one repaint per chart); `epochs`: the run's total, if known."""
        self._history = history
        self._epochs = epochs
        self._draw()

    def on_resize(self) -> None:
        # A wider chart can show more of a long series: downsample again for the new width.
        if self._history is not None and self._chart_widths() != self._widths:
            self._draw()

    def _chart_widths(self) -> tuple[int, ...]:
        return tuple(chart.size.width for chart in self.query(LineChart))

    def _draw(self) -> None:
        history = self._history
        assert history is not None
        self._widths = self._chart_widths()
        last = max(history.epochs, default=0)
        # The whole run on the x axis: the first robust point sits where it belongs, not at the right edge.
        span = max(self._epochs, last)
        xlim = (1.0, float(span)) if span > 1 else None
        self._set("#chart-accuracy", {
            "clean": history.epoch_series("test_clean_acc"),
            "robust": history.epoch_series("test_robust_acc"),
            "train": history.epoch_series("train_acc"),
        }, xlim)
        # The lowest loss goes in the legend: the status line has no room left at 80 columns.
        lowest = history.lowest("train_loss")
        loss_name = "train" if lowest is None else f"min {lowest.value:.3g} (ep {lowest.epoch})"
        self._set("#chart-loss", {loss_name: history.epoch_series("train_loss")}, xlim)
        self._set("#chart-lr", {"lr": history.epoch_series("lr")}, xlim)
        self._set("#chart-steps", {"train": history.step_series("train_loss")}, None, epochs=False)

    def _set(self, selector: str, series: dict[str, Series], xlim: tuple[float, float] | None,
             epochs: bool = True) -> None:
        chart = self.query_one(selector, LineChart)
        points = POINTS_PER_CELL * (chart.size.width or WIDTH_BEFORE_LAYOUT)
        # Steps are logged every few batches by design: only a step chart of one or two points gets markers.
        marked = [name for name, (xs, _) in series.items() if xs and (sparse(xs) if epochs else len(xs) <= 2)]
        chart.set_series({name: downsample(xs, ys, points) for name, (xs, ys) in series.items()},
                         marked=marked, xlim=xlim)

    @property
    def points(self) -> int:
        return sum(chart.points for chart in self.query(LineChart))
