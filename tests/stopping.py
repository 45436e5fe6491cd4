"""Stop a training run at a chosen batch, as a SIGTERM there would (the resume tests)."""

from __future__ import annotations

import signal

import torch

from workbench.runs import RunPaths
from workbench.training import Trainer
from workbench.training.reporting import SilentReporter
from workbench.training.session import load_run_config


def train_stopped_at(run: RunPaths, epoch: int, batch: int) -> str:
    """Train `run` on the CPU and request a stop once `batch` batches of `epoch` (0-based) are done;
    the trainer's final state ("stopped" when the request landed inside the run)."""

    class StopAt(SilentReporter):
        def batch(self, e: int, b: int) -> None:
            if (e, b) == (epoch, batch):
                trainer.stop.signum = signal.SIGTERM

    trainer = Trainer(load_run_config(run), run, torch.device("cpu"), reporter=StopAt())
    return trainer.train()
