"""Optimizers by name and learning-rate schedules as a function of fractional epoch.

The schedule is stateless: lr = base_lr * factor(epoch + batch / batches), so resuming
at any position restores it exactly without a scheduler state to save.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ..config.schema import AdamConfig, ScheduleConfig, SGDConfig
from ..registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, cfg: SGDConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, cfg: AdamConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable, cfg: AdamConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_optimizer(params: Iterable, cfg: SGDConfig | AdamConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, cfg)


# A schedule maps (config, fractional epoch t, total epochs, one step in epochs dt) to an lr factor.
SCHEDULES: Registry[Callable[[ScheduleConfig, float, int, float], float]] = Registry("schedule")


@SCHEDULES.register("constant")
def _constant(cfg: ScheduleConfig, t: float, epochs: int, dt: float) -> float:
    return 1.0


@SCHEDULES.register("multistep")
def _multistep(cfg: ScheduleConfig, t: float, epochs: int, dt: float) -> float:
    # Milestones are epoch numbers at which the drop applies (torch MultiStepLR semantics).
    return cfg.gamma ** sum(1 for m in cfg.milestones if math.floor(t) >= m)


@SCHEDULES.register("cosine")
def _cosine(cfg: ScheduleConfig, t: float, epochs: int, dt: float) -> float:
    w = cfg.warmup_epochs
    if t < w:
        return min(1.0, (t + dt) / w)  # warm-up never gives a zero first step
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - w) / max(epochs - w, 1e-9))))


@SCHEDULES.register("onecycle")
def _onecycle(cfg: ScheduleConfig, t: float, epochs: int, dt: float) -> float:
    w = cfg.warmup_epochs or 0.2 * epochs
    if t < w:
        return min(1.0, (t + dt) / w)
    return max(0.0, (epochs - t) / max(epochs - w, 1e-9))


def lr_factor(cfg: ScheduleConfig, t: float, epochs: int, dt: float = 0.0) -> float:
    return SCHEDULES.get(cfg.name)(cfg, t, epochs, dt)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
