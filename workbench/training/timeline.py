"""What each epoch of a run does, from its config, its defense and the epoch records so far: the defense's
phase, whether the epoch trains on adversarial examples (and on which subset), and the span the lr schedule
runs over. The trainer follows it; a fork (fork.py) compares two runs' timelines epoch by epoch."""

from __future__ import annotations

from typing import Any, Sequence

from ..config.schema import RunConfig
from .optim import lr_factor


def phase(cfg: RunConfig, defense, epoch: int, history: Sequence[dict[str, Any]]) -> str:
    """The defense's phase of 0-based `epoch`, decided from the epoch records so far (restored on resume)."""
    return defense.phase(epoch, cfg.epochs, history)


def final_phase(cfg: RunConfig, defense, history: Sequence[dict[str, Any]]) -> str:
    return phase(cfg, defense, cfg.epochs - 1, history)


def adversarial(cfg: RunConfig, defense, epoch: int, history: Sequence[dict[str, Any]]) -> bool:
    """Whether `epoch` takes the adversarial loader: every epoch, or only the defense's last phase."""
    return cfg.adv_train.phases == "all" or phase(cfg, defense, epoch, history) == final_phase(cfg, defense, history)


def attacking(cfg: RunConfig, defense, epoch: int, history: Sequence[dict[str, Any]]) -> bool:
    """Whether `epoch` really crafts adversarial examples (an adversarial epoch of a run without an attack does not)."""
    return cfg.adv_train.enabled and adversarial(cfg, defense, epoch, history)


def epoch_subset(cfg: RunConfig, defense, epoch: int, history: Sequence[dict[str, Any]]) -> int | None:
    """The first N training samples `epoch` trains on (None: the whole split, as `data.train_subset` cuts it)."""
    return cfg.adv_train.train_subset if adversarial(cfg, defense, epoch, history) else None


def schedule_span(cfg: RunConfig, defense, epoch: int, history: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(first epoch, length) of the stretch the lr schedule spans: the run, or the defense's phase."""
    epochs = cfg.epochs
    if not cfg.schedule.per_phase:
        return 0, epochs
    phases = [phase(cfg, defense, e, history) for e in range(epochs)]  # later epochs: as far as the history tells
    start = epoch
    while start > 0 and phases[start - 1] == phases[epoch]:
        start -= 1
    end = epoch + 1
    while end < epochs and phases[end] == phases[epoch]:
        end += 1
    return start, end - start


def step_lr_factor(cfg: RunConfig, epoch: int, span: tuple[int, int], batch: int, batches: int) -> float:
    """The schedule's factor of the base lr at step `batch` of `batches` in `epoch`, within its `schedule_span`."""
    start, length = span
    return lr_factor(cfg.schedule, epoch - start + batch / batches, length, dt=1.0 / batches)


def lr_factors(cfg: RunConfig, defense, epoch: int, batches: int, history: Sequence[dict[str, Any]]) -> list[float]:
    """The schedule's factor of the base lr at each of the epoch's `batches` steps."""
    span = schedule_span(cfg, defense, epoch, history)
    return [step_lr_factor(cfg, epoch, span, b, batches) for b in range(batches)]
