"""Starting a run from another run's state after its first k epochs, when both train those epochs identically.

A suite's adversarially trained PCL models share their CE warm-up: each would train the same first epochs
again. A fork takes them from one run's snapshot instead, and ends bit-identical to training from the start:

- the two configs must agree on everything that shapes those epochs (model, data, optimizer, batch, seed,
  evaluation, precision); their defenses must train each epoch alike (`Defense.trains_like`), their lr
  schedules give the same lr at every step, and their epochs attack alike (the same `adv_train` if any does);
- the two runs must start from the same state (a digest of the initial model, auxiliary state and RNG), which
  the snapshot carries;
- the defense's own state and the training attack's generators are taken only where they were in use: a
  run whose warm-up left them untouched keeps its own.

`fork_refusal` says why not; `shared_epochs` plans how many epochs a suite cell can take (without the
source's epoch records, which may move a gated warm-up: the fork itself checks again with them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from defenses import create_defense

from ..config.schema import RunConfig
from ..runs import RunPaths
from . import timeline

# What may differ between two runs that share their first epochs: what does not shape those epochs (names,
# logging, the run's length), or what is compared epoch by epoch below (defense, adversarial training, lr).
PER_EPOCH = ("name", "description", "epochs", "log_every", "checkpoint_every", "defense", "adv_train", "schedule")
PLAN_STEPS = 64  # lr checks per epoch when the number of batches is not known (planning)


def _differing_key(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            found = _differing_key(va, vb, f"{prefix}{key}.")
            if found:
                return found
        elif va != vb:
            return f"{prefix}{key}"
    return None


def _defense(cfg: RunConfig, num_classes: int):
    return create_defense(cfg.defense.name, cfg.defense.params, num_classes)


def fork_refusal(source: RunConfig, target: RunConfig, epochs: int, num_classes: int,
                 history: Sequence[dict[str, Any]] = (), batches: dict[bool, int] | None = None) -> str | None:
    """Why `target` would not train its first `epochs` epochs exactly as `source` did (None: it would), given
    the source's epoch records; `batches`: steps per epoch of the clean and the adversarial loader."""
    if not 0 < epochs < target.epochs or epochs > source.epochs:
        return f"{epochs} shared epochs: the target has {target.epochs}, the source {source.epochs}"
    a = {k: v for k, v in source.model_dump(mode="json").items() if k not in PER_EPOCH}
    b = {k: v for k, v in target.model_dump(mode="json").items() if k not in PER_EPOCH}
    key = _differing_key(a, b)
    if key is not None:
        return f"the configs differ in {key}"
    da, db = _defense(source, num_classes), _defense(target, num_classes)
    for e in range(epochs):
        past = history[:e]
        if not db.trains_like(da, e, target.epochs, source.epochs, past):
            return f"the defenses train epoch {e + 1} differently"
        attacks = timeline.attacking(source, da, e, past)
        if attacks != timeline.attacking(target, db, e, past):
            return f"only one of the runs trains epoch {e + 1} on adversarial examples"
        if attacks and source.adv_train != target.adv_train:
            return f"epoch {e + 1} trains on adversarial examples made differently"
        subset = timeline.epoch_subset(source, da, e, past)
        if subset != timeline.epoch_subset(target, db, e, past):
            return f"epoch {e + 1} trains on different training subsets"
        steps = batches[subset is not None] if batches else PLAN_STEPS
        if timeline.lr_factors(source, da, e, steps, past) != timeline.lr_factors(target, db, e, steps, past):
            return f"the lr schedules differ in epoch {e + 1}"
    return None


def shared_epochs(source: RunConfig, target: RunConfig, num_classes: int) -> int:
    """The most leading epochs `target` can take from `source` (0: none), as far as the configs tell."""
    k = 0
    while k + 1 < target.epochs and fork_refusal(source, target, k + 1, num_classes) is None:
        k += 1
    return k


def uses_adversary(cfg: RunConfig, defense, epochs: int, history: Sequence[dict[str, Any]]) -> bool:
    """Whether the first `epochs` epochs drew from the training attack's generators."""
    return any(timeline.attacking(cfg, defense, e, history[:e]) for e in range(epochs))


def state_digest(*states: dict[str, torch.Tensor], rng: Sequence[torch.Tensor] = ()) -> str:
    """A digest of tensors (state dicts, RNG states), bit for bit: two runs with the same one start alike."""
    h = hashlib.sha256()
    for state in states:
        for name, t in state.items():
            h.update(name.encode())
            if isinstance(t, torch.Tensor):
                h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(t).encode())
    for t in rng:
        h.update(t.cpu().numpy().tobytes())
    return h.hexdigest()


def write_snapshot(run: RunPaths, epoch: int) -> Path:
    """Keep the run's state after `epoch` (its checkpoints and metrics) for forks, whatever it trains later."""
    final = run.snapshot(epoch)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for src in (run.last, run.best, run.metrics):
        if src.exists():
            shutil.copyfile(src, tmp / src.name)
    shutil.rmtree(final, ignore_errors=True)  # a resumed run that trains the epoch again writes it again
    os.replace(tmp, final)
    return final
