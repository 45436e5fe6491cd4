"""Training runs: the trainer, its optimizers and schedules, and progress reporting."""

from .session import prepare_run, run_training
from .trainer import Trainer, resolve_device

__all__ = ["Trainer", "prepare_run", "resolve_device", "run_training"]
