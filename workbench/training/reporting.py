"""Progress reporting for a training run in a terminal: rich bars on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter(Protocol):
    def start(self, epochs: int, batches: int, epoch: int, batch: int) -> None: ...
    def begin_epoch(self, epoch: int, batches: int) -> None: ...
    def batch(self, epoch: int, batch: int) -> None: ...
    def log(self, record: dict[str, Any]) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start(self, epochs, batches, epoch, batch): pass
    def begin_epoch(self, epoch, batches): pass
    def batch(self, epoch, batch): pass
    def log(self, record): pass
    def epoch(self, record): pass
    def close(self): pass


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    robust = f" robust@{rec['robust_eps']:g} {_pct(rec['test_robust_acc'])}" if rec.get("test_robust_acc") is not None else ""
    return (f"epoch {rec['epoch']}/{epochs}  loss {rec['train_loss']:.4f}  train {_pct(rec['train_acc'])}  "
            f"clean {_pct(rec.get('test_clean_acc'))}{robust}  lr {rec['lr']:.3g}  {rec['seconds']:.1f}s")


class PlainReporter(SilentReporter):
    """One line per epoch: for logs and pipes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.epochs = 0

    def start(self, epochs, batches, epoch, batch):
        self.epochs = epochs
        where = f" (resuming at epoch {epoch + 1}, batch {batch})" if epoch or batch else ""
        print(f"training {epochs} epochs of {batches} batches{where}", file=self.stream, flush=True)

    def epoch(self, record):
        print(epoch_line(record, self.epochs), file=self.stream, flush=True)


class RichReporter(SilentReporter):
    """Epoch and batch progress bars with loss, accuracy and ETA."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.epochs = 0

    def start(self, epochs, batches, epoch, batch):
        self.epochs = epochs
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=epoch, info="")
        self.batch_task = self.progress.add_task(f"epoch {epoch + 1}", total=batches, completed=batch, info="")

    def begin_epoch(self, epoch, batches):
        # An adversarial epoch may have fewer batches than a clean warm-up's (adv_train.train_subset).
        self.progress.update(self.batch_task, total=batches, description=f"epoch {epoch + 1}")

    def batch(self, epoch, batch):
        self.progress.update(self.batch_task, completed=batch, description=f"epoch {epoch + 1}")

    def log(self, record):
        self.progress.update(self.batch_task, info=f"loss {record['train_loss']:.4f} acc {_pct(record['train_acc'])}")

    def epoch(self, record):
        self.progress.console.print(epoch_line(record, self.epochs), highlight=False)
        self.progress.update(self.epoch_task, completed=record["epoch"],
                             info=f"clean {_pct(record.get('test_clean_acc'))}")
        if record["epoch"] < self.epochs:
            self.progress.reset(self.batch_task, info="")
        else:
            self.progress.update(self.batch_task, visible=False)

    def close(self):
        self.progress.stop()


def reporter_for(stream=None) -> Reporter:
    stream = stream or sys.stdout
    return RichReporter() if stream.isatty() else PlainReporter(stream)
