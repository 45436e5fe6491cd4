"""The Run monitor's charts: loss per epoch, clean and robust accuracy per epoch, loss per step."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid

from ..model.history import History
from .line_chart import LineChart


class RunCharts(Grid):
    """Epoch charts side by side on top, the (longer) per-step loss across the bottom."""

    DEFAULT_CSS = """
    RunCharts { grid-size: 2 2; grid-rows: 1fr 1fr; grid-columns: 1fr 1fr; height: 1fr; }
    RunCharts > #chart-steps { column-span: 2; }
    """

    def compose(self) -> ComposeResult:
        yield LineChart("accuracy per epoch", "epoch", ylim=(0.0, 1.0), id="chart-accuracy")
        yield LineChart("train loss per epoch", "epoch", id="chart-loss")
        yield LineChart("train loss per step", "step", id="chart-steps")

    def show(self, history: History) -> None:
        """Redraw all three from the history (one repaint per chart)."""
        self.query_one("#chart-accuracy", LineChart).set_series({
            "clean": history.epoch_series("test_clean_acc"),
            "robust": history.epoch_series("test_robust_acc"),
        })
        self.query_one("#chart-loss", LineChart).set_series({"train": history.epoch_series("train_loss")})
        self.query_one("#chart-steps", LineChart).set_series({"train": history.step_series("train_loss")})

    @property
    def points(self) -> int:
        return sum(chart.points for chart in self.query(LineChart))
