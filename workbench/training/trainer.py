"""The trainer: one run, from its folder's config to its checkpoints and metrics stream.

It knows nothing of terminals or UIs: it writes metrics.jsonl, status.json and
checkpoints, and reports progress to an optional `Reporter`. State is saved so that a
resumed run continues exactly where the checkpoint was taken (epoch, batch, optimizer,
every RNG), and a run killed hard loses at most the epoch in progress.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from attacks import FGSM, PGD
from defenses import BatchContext, create_defense

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config.schema import RunConfig, resolve_step_size
from ..data import DATASETS, DeviceLoader, load_raw
from ..errors import WorkbenchError
from ..models import create_model
from ..provenance import provenance
from ..runs import MetricsWriter, RunPaths, Status, truncate_metrics
from .adversarial import AdversarialBatcher
from .evaluate import clean_accuracy, robust_accuracy
from .optim import build_optimizer, lr_factor, set_lr
from .reporting import Reporter, SilentReporter

STATUS_INTERVAL = 2.0  # seconds between status.json heartbeats


class NonFiniteLoss(Exception):
    pass


@dataclass
class Position:
    epoch: int = 0  # 0-based epoch in progress (== epochs completed when batch == 0)
    batch: int = 0  # batches completed within `epoch`
    step: int = 0  # global optimizer steps


@dataclass
class EpochTotals:
    """Running sums of the epoch in progress, kept on the device (read at log points only)."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    seconds: float = 0.0
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochTotals":
        return cls(torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device))

    def state(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "correct": int(self.correct), "seen": self.seen,
                "seconds": self.seconds, "parts": {k: float(v) for k, v in self.parts.items()}}

    @classmethod
    def from_state(cls, s: dict[str, Any], device: torch.device) -> "EpochTotals":
        t = cls(torch.tensor(s["loss"], device=device), torch.tensor(s["correct"], device=device), s["seen"], s["seconds"])
        t.parts = {k: torch.tensor(v, device=device) for k, v in s["parts"].items()}
        return t


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError(f"device {name!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise WorkbenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def model_recipe(cfg: RunConfig) -> dict[str, Any]:
    """What a checkpoint needs to rebuild the model without the dataset registry."""
    spec = DATASETS.get(cfg.dataset)
    norm = cfg.model.normalize
    if norm == "dataset":
        normalize = {"mean": list(spec.mean), "std": list(spec.std)}
    elif isinstance(norm, dict):
        normalize = {"mean": list(norm["mean"]), "std": list(norm["std"])}
    else:
        normalize = None
    return {"name": cfg.model.name, "in_channels": spec.channels, "num_classes": spec.num_classes,
            "image_size": spec.image_size, "normalize": normalize, "options": dict(cfg.model.options),
            "defense": {"name": cfg.defense.name, "params": dict(cfg.defense.params)}}


class Trainer:
    def __init__(self, cfg: RunConfig, run: RunPaths, device: torch.device,
                 reporter: Reporter | None = None, data_root: str | None = None):
        self.cfg = cfg
        self.run = run
        self.device = device
        self.reporter = reporter or SilentReporter()
        self.data_root = data_root
        self._stop_signal: int | None = None

        torch.manual_seed(cfg.seed)
        spec = DATASETS.get(cfg.dataset)
        self.dataset = spec
        self.recipe = model_recipe(cfg)
        self.defense = create_defense(cfg.defense.name, cfg.defense.params, spec.num_classes)
        norm = self.recipe["normalize"]
        model = create_model(cfg.model.name, spec.channels, spec.num_classes, spec.image_size,
                             normalize=(norm["mean"], norm["std"]) if norm else None, **cfg.model.options)
        self.model: nn.Module = self.defense.transform_model(model).to(device)
        self.auxiliary = self.defense.attach(self.model, (spec.channels, spec.image_size, spec.image_size))
        own = {id(p) for p in self.defense.self_updated()}
        aux_params = [p for p in self.auxiliary.parameters() if id(p) not in own] if self.auxiliary is not None else []
        self.params = list(self.model.parameters()) + aux_params
        self.optimizer = build_optimizer(self.params, cfg.optimizer)
        self.base_lr = cfg.optimizer.lr
        self.adversary = AdversarialBatcher(cfg.adv_train, self.model, cfg.seed)

        # Data: the whole split on the device.
        x_train, y_train = load_raw(cfg.dataset, "train", root=data_root)
        if cfg.data.train_subset:
            x_train, y_train = x_train[: cfg.data.train_subset], y_train[: cfg.data.train_subset]
        augment = spec.augment if cfg.data.augment == "auto" else cfg.data.augment
        self.loader = DeviceLoader(x_train, y_train, cfg.batch_size, device, shuffle=True, augment=augment)
        x_test, y_test = load_raw(cfg.dataset, "test", root=data_root)
        self.x_test, self.y_test = x_test.to(device), y_test.to(device)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch_start_state = self.data_generator.get_state()

        self.position = Position()
        self.totals = EpochTotals.zeros(device)
        self.history: list[dict[str, Any]] = []  # epoch records
        self.best_value: float | None = None
        self.status = Status(pid=None, epochs=cfg.epochs, batches=len(self.loader), device=str(device))
        self.provenance = provenance()

    # -- evaluation -------------------------------------------------------------------------
    def eval_attack(self):
        e = self.cfg.eval
        if e.attack == "fgsm":
            attack = FGSM(self.model, eps=e.eps, seed=0)
        else:
            attack = PGD(self.model, eps=e.eps, steps=e.steps, restarts=e.restarts, seed=0,
                         step_size=resolve_step_size(e.step_size, e.eps, e.steps))
        return attack

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Clean (and every `robust_every` epochs, robust) test accuracy after `epoch` (1-based)."""
        e = self.cfg.eval
        out: dict[str, Any] = {"test_clean_acc": None, "test_robust_acc": None}
        last = epoch == self.cfg.epochs
        t0 = time.perf_counter()
        if e.clean_every and (epoch % e.clean_every == 0 or last):
            n = e.clean_subset or len(self.y_test)
            out["test_clean_acc"] = clean_accuracy(self.model, self.x_test[:n], self.y_test[:n], e.batch_size)
        if e.robust_every and (epoch % e.robust_every == 0 or last):
            n = e.robust_subset
            out["test_robust_acc"] = robust_accuracy(self.eval_attack(), self.x_test[:n], self.y_test[:n], e.batch_size)
        out["eval_seconds"] = time.perf_counter() - t0
        return out

    def best_key(self) -> str:
        by = self.cfg.eval.best_by
        if by == "auto":
            by = "robust" if self.cfg.eval.robust_every else "clean"
        return f"test_{by}_acc"

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_data(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "data_epoch_start": self.epoch_start_state,
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
               "adversary": self.adversary.state()}
        return {
            "model": self.recipe,
            "state_dict": self.model.state_dict(),
            "auxiliary": self.auxiliary.state_dict() if self.auxiliary is not None else None,
            "defense_state": self.defense.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "position": {"epoch": self.position.epoch, "batch": self.position.batch, "step": self.position.step},
            "totals": self.totals.state(),
            "rng": rng,
            "best_value": self.best_value,
            "history": self.history,
            "config": self.cfg.model_dump(mode="json"),
            "dataset": self.cfg.dataset,
            "provenance": self.provenance,
        }

    def save(self, best: bool = False) -> None:
        # Never write a non-finite state over the last good checkpoint.
        if not math.isfinite(float(self.totals.loss)):
            raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {self.position.epoch + 1}; {self._kept()}")
        data = self.checkpoint_data()
        save_checkpoint(data, self.run.last)
        if best:
            save_checkpoint(data, self.run.best)

    def restore(self, path) -> None:
        data = read_checkpoint(path)
        self.model.load_state_dict(data["state_dict"])
        if self.auxiliary is not None and data.get("auxiliary") is not None:
            self.auxiliary.load_state_dict(data["auxiliary"])
        self.defense.load_state_dict(data.get("defense_state") or {})
        self.optimizer.load_state_dict(data["optimizer"])
        p = data["position"]
        self.position = Position(p["epoch"], p["batch"], p["step"])
        self.totals = EpochTotals.from_state(data["totals"], self.device)
        rng = data["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.epoch_start_state = rng["data_epoch_start"]
        if not self.adversary.load_state(rng["adversary"], self.device, self.position.step):
            print(f"note: resumed on {self.device.type}; the adversarial-training attack's random starts are "
                  "reseeded (a generator state does not carry across devices)", flush=True)
        self.best_value = data.get("best_value")
        self.history = list(data.get("history", []))
        # Drop metric lines written after this checkpoint, so no step appears twice.
        pos = self.position
        truncate_metrics(self.run.metrics, lambda r: (r.get("step", 0) <= pos.step)
                         and not (r.get("kind") == "epoch" and r.get("epoch", 0) > pos.epoch))

    def start_fresh(self) -> None:
        """No checkpoint yet: drop metric lines a killed earlier attempt may have written."""
        truncate_metrics(self.run.metrics, lambda r: False)

    # -- signals ----------------------------------------------------------------------------
    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        def handler(signum, frame):
            self._stop_signal = signum

        saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    # -- the loop ---------------------------------------------------------------------------
    def write_status(self, state: str, message: str = "") -> None:
        s = self.status
        s.state, s.message = state, message
        s.epoch = self.position.epoch
        s.batch, s.step = self.position.batch, self.position.step
        s.write(self.run.status)

    def train(self) -> str:
        """Run to the end (or until stopped); returns the final state."""
        cfg = self.cfg
        self.status.pid = os.getpid()
        self._refresh_best()
        metrics = MetricsWriter(self.run.metrics)
        self.reporter.start(cfg.epochs, len(self.loader), self.position.epoch, self.position.batch)
        self.write_status("running")
        try:
            with self._stop_on_signals():
                state, message = self._loop(metrics)
        except NonFiniteLoss as exc:
            state, message = "failed", str(exc)
        except BaseException as exc:  # record the failure for `runs` and the TUI, then re-raise
            self.write_status("failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            self.reporter.close()
            metrics.close()
            raise
        self.write_status(state, message)
        self.reporter.close()
        metrics.close()
        return state

    def _refresh_best(self) -> None:
        """Status best/last accuracies from the epoch history (after a resume)."""
        for rec in self.history:
            self._note_accuracies(rec)

    def _note_accuracies(self, rec: dict[str, Any]) -> None:
        for kind in ("clean", "robust"):
            value = rec.get(f"test_{kind}_acc")
            if value is not None:
                best = getattr(self.status, f"best_{kind}")
                setattr(self.status, f"last_{kind}", value)
                setattr(self.status, f"best_{kind}", value if best is None else max(best, value))

    def _loop(self, metrics: MetricsWriter) -> tuple[str, str]:
        cfg = self.cfg
        batches = len(self.loader)
        # Step metrics are differences of the epoch totals between log points: one accumulator,
        # a few kernel launches per step, one device read per log point.
        mark_loss, mark_correct, mark_seen = float(self.totals.loss), int(self.totals.correct), self.totals.seen
        last_status = time.time()
        self.model.train()
        while self.position.epoch < cfg.epochs:
            epoch = self.position.epoch
            if self.position.batch == 0 and self.defense.reset_optimizer_at(epoch, cfg.epochs):
                # A new training phase starts with a fresh optimizer state (the papers' phase-2 scripts).
                self.optimizer = build_optimizer(self.params, cfg.optimizer)
            # Every random draw of the epoch (order, augmentation) comes from this one state.
            self.data_generator.set_state(self.epoch_start_state)
            t_epoch = time.perf_counter()
            adversarial = cfg.adv_train.phases == "all" or (
                self.defense.phase(epoch, cfg.epochs) == self.defense.phase(cfg.epochs - 1, cfg.epochs))
            for x, y in self.loader.epoch(self.data_generator, start=self.position.batch):
                start, length = self.schedule_span(epoch)
                t = epoch - start + self.position.batch / batches
                lr = self.base_lr * lr_factor(cfg.schedule, t, length, dt=1.0 / batches)
                set_lr(self.optimizer, lr)
                x_in, y_in, adv_mask = self.adversary.make_batch(x, y) if adversarial else (x, y, None)
                ctx = BatchContext(epoch=epoch, epochs=cfg.epochs, step=self.position.step, is_adversarial=adv_mask)
                out = self.defense.training_loss(self.model, x_in, y_in, ctx)
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                self.defense.after_step(ctx)

                # Accumulate on the device; read back only at log points (no per-step sync). A nan/inf
                # loss poisons the running sum, so checking the sum there catches it.
                n = y_in.shape[0]
                self.totals.loss.add_(out.loss.detach(), alpha=n)
                self.totals.correct.add_((out.logits.detach().argmax(1) == y_in).sum())
                self.totals.seen += n
                for k, v in out.parts.items():
                    self.totals.parts[k] = self.totals.parts.get(k, 0) + v.detach() * n
                self.position.batch += 1
                self.position.step += 1
                self.reporter.batch(epoch, self.position.batch)

                if self.position.step % cfg.log_every == 0 or self.position.batch == batches:
                    total_loss, total_correct = float(self.totals.loss), int(self.totals.correct)
                    if not math.isfinite(total_loss):
                        raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {epoch + 1} before step "
                                            f"{self.position.step}; {self._kept()}")
                    seen = self.totals.seen - mark_seen
                    rec = {"kind": "step", "epoch": epoch + 1, "batch": self.position.batch, "step": self.position.step,
                           "train_loss": (total_loss - mark_loss) / seen,
                           "train_acc": (total_correct - mark_correct) / seen, "lr": lr, "time": time.time()}
                    metrics.write(rec)
                    self.reporter.log(rec)
                    mark_loss, mark_correct, mark_seen = total_loss, total_correct, self.totals.seen
                if time.time() - last_status > STATUS_INTERVAL:
                    self.write_status("running")
                    last_status = time.time()
                if self._stop_signal is not None and self.position.batch < batches:
                    self.totals.seconds += time.perf_counter() - t_epoch
                    self.save()
                    name = signal.Signals(self._stop_signal).name
                    return "stopped", f"stopped by {name} in epoch {epoch + 1} at batch {self.position.batch}/{batches}; resume to continue"
                if cfg.checkpoint_every and self.position.step % cfg.checkpoint_every == 0 and self.position.batch < batches:
                    self.totals.seconds += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    self.save()

            # End of epoch: evaluate, record, checkpoint.
            if not math.isfinite(float(self.totals.loss)):
                raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {epoch + 1}; {self._kept()}")
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds = self.totals.seconds + time.perf_counter() - t_epoch
            evals = self.evaluate(epoch + 1)
            seen = max(self.totals.seen, 1)
            record = {"kind": "epoch", "epoch": epoch + 1, "step": self.position.step,
                      "train_loss": float(self.totals.loss) / seen, "train_acc": int(self.totals.correct) / seen,
                      **{k: evals[k] for k in ("test_clean_acc", "test_robust_acc")},
                      "robust_eps": cfg.eval.eps if evals["test_robust_acc"] is not None else None,
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": train_seconds,
                      "eval_seconds": evals["eval_seconds"], "time": time.time(),
                      "phase": self.defense.phase(epoch, cfg.epochs),
                      **{f"loss_{k}": float(v) / seen for k, v in self.totals.parts.items()},
                      **self.defense.epoch_metrics(self.model)}
            problem = self.defense.check_epoch(record, self.history)
            if problem is not None:  # keep last.pt at the previous (good) epoch
                metrics.write(record)
                self.reporter.epoch(record)
                return "failed", problem
            self.history.append(record)
            key = self.best_key()
            # Only the defense's last phase competes for best.pt: a PC-LC run's best must not be a warm-up (CE) model.
            final_phase = record["phase"] == self.defense.phase(cfg.epochs - 1, cfg.epochs)
            improved = final_phase and record.get(key) is not None and (
                self.best_value is None or record[key] > self.best_value)
            if improved:
                self.best_value = record[key]
            self._note_accuracies(record)

            self.position = Position(epoch + 1, 0, self.position.step)
            self.totals = EpochTotals.zeros(self.device)
            mark_loss, mark_correct, mark_seen = 0.0, 0, 0
            self.epoch_start_state = self.data_generator.get_state()
            metrics.write(record)
            self.save(best=improved or not self.run.best.exists())
            self.reporter.epoch(record)
            self.write_status("running")
            if self._stop_signal is not None and self.position.epoch < cfg.epochs:
                name = signal.Signals(self._stop_signal).name
                return "stopped", f"stopped by {name} after epoch {epoch + 1}; resume to continue"
        return "finished", f"finished {cfg.epochs} epochs"

    def schedule_span(self, epoch: int) -> tuple[int, int]:
        """(first epoch, length) of the stretch the lr schedule spans: the run, or the defense's phase."""
        epochs = self.cfg.epochs
        if not self.cfg.schedule.per_phase:
            return 0, epochs
        phases = [self.defense.phase(e, epochs) for e in range(epochs)]
        start = epoch
        while start > 0 and phases[start - 1] == phases[epoch]:
            start -= 1
        end = epoch + 1
        while end < epochs and phases[end] == phases[epoch]:
            end += 1
        return start, end - start

    def _kept(self) -> str:
        if self.run.last.exists():
            return "stopped; checkpoints/last.pt, the last good state, is kept"
        return "stopped before any checkpoint was written (try a lower learning rate)"
