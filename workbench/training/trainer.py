"""The trainer: one run, from its folder's config to its checkpoints and metrics stream.

It knows nothing of terminals or UIs: it writes metrics.jsonl, status.json and
checkpoints, and reports progress to an optional `Reporter`. State is saved so that a
resumed run continues exactly where the checkpoint was taken (epoch, batch, optimizer,
every RNG), and a run killed hard loses at most the epoch in progress.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from torch.nn.parallel import DistributedDataParallel

from attacks import FGSM, PGD
from defenses import BatchContext, create_defense

from .. import collective
from ..accel import Precision, autocast, channels_last, compile_model, resolve_amp, set_cudnn_benchmark
from ..checkpoint import read_checkpoint, save_checkpoint
from ..config.schema import RunConfig, resolve_step_size
from ..data import DATASETS, DeviceLoader, load_raw
from ..errors import WorkbenchError
from ..models import create_model
from ..provenance import provenance
from ..runs import MetricsWriter, RunPaths, Status, truncate_metrics
from ..stop_request import StopRequest
from . import timeline
from .fork import fork_refusal, state_digest, uses_adversary, write_snapshot
from .adversarial import AdversarialBatcher
from .distributed import SINGLE, Ranks
from .evaluate import clean_correct, robust_correct
from .optim import build_optimizer, set_lr
from .reporting import Reporter, SilentReporter

STATUS_INTERVAL = 2.0  # seconds between status.json heartbeats


class NonFiniteLoss(Exception):
    pass


class UnhealthyTraining(Exception):
    """The defense's step check found training broken mid-epoch (features ran away or died)."""


class NullWriter:
    """The metrics stream of ranks other than 0: rank 0 writes the aggregated records."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
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


@dataclass
class LogMark:
    """The epoch totals at the previous log point (host numbers): a step record covers the steps since.
    Checkpoints carry it, so the first record after a resume covers the same steps as without the kill."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0
    parts: dict[str, float] = field(default_factory=dict)  # the loss parts' sums (their means per record)


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


class DefenseLoss(nn.Module):
    """The defense's training loss as one module over the model and the defense's trainable state, so that DDP
    wraps them together (every gradient averaged in one pass) whatever the defense calls inside its loss."""

    def __init__(self, net: nn.Module, auxiliary: nn.Module | None, defense):
        super().__init__()
        self.net, self.auxiliary, self.defense = net, auxiliary, defense

    def forward(self, x: torch.Tensor, y: torch.Tensor, ctx: BatchContext):
        out = self.defense.training_loss(self.net, x, y, ctx)
        return out.loss, out.logits, out.parts


def train_loaders(cfg: RunConfig, default_augment: str, device: torch.device, ranks: Ranks,
                  data_root: str | None) -> dict[bool, DeviceLoader]:
    """The training split on the device, for clean (False) and adversarial (True) epochs: the same loader,
    unless adv_train.train_subset gives adversarial epochs only the first N samples. Every rank holds the
    split and takes its share of each global batch."""
    x, y = load_raw(cfg.dataset, "train", root=data_root)
    x, y = x[: cfg.data.train_subset], y[: cfg.data.train_subset]  # None: all
    augment = default_augment if cfg.data.augment == "auto" else cfg.data.augment

    def loader(n: int | None) -> DeviceLoader:
        return DeviceLoader(x[:n], y[:n], cfg.batch_size, device, shuffle=True, augment=augment,
                            shard=(ranks.rank, ranks.world))

    every = loader(None)
    loaders = {False: every, True: loader(cfg.adv_train.train_subset) if cfg.adv_train.train_subset else every}
    for each in loaders.values():
        if ranks.world > min(cfg.batch_size, each.num_samples):
            raise WorkbenchError(f"batch_size {cfg.batch_size} cannot be split over {ranks.world} devices")
        if min(each.batch_sizes(len(each) - 1)) == 0:
            raise WorkbenchError(f"the last batch of an epoch ({each.num_samples % cfg.batch_size} samples) "
                                 f"cannot be split over {ranks.world} devices; change batch_size or the "
                                 "training subset")
    return loaders


class Trainer:
    def __init__(self, cfg: RunConfig, run: RunPaths, device: torch.device,
                 reporter: Reporter | None = None, data_root: str | None = None, ranks: Ranks = SINGLE,
                 stop: StopRequest | None = None, snapshot_epochs: Sequence[int] = ()):
        self.cfg = cfg
        self.run = run
        self.device = device
        self.ranks = ranks
        self.reporter = (reporter or SilentReporter()) if ranks.main else SilentReporter()
        self.data_root = data_root
        self.stop = stop or StopRequest()

        torch.manual_seed(cfg.seed)  # the same initial model on every rank
        spec = DATASETS.get(cfg.dataset)
        self.dataset = spec
        self.recipe = model_recipe(cfg)
        self.defense = create_defense(cfg.defense.name, cfg.defense.params, spec.num_classes)
        self.model: nn.Module = self._build_model()  # the module checkpoints save (never the compiled or DDP wrapper)
        self.auxiliary = self.defense.attach(self.model, (spec.channels, spec.image_size, spec.image_size))
        own = {id(p) for p in self.defense.self_updated()}
        aux_params = [p for p in self.auxiliary.parameters() if id(p) not in own] if self.auxiliary is not None else []
        self.params = list(self.model.parameters()) + aux_params
        self.optimizer = build_optimizer(self.params, cfg.optimizer)
        self.base_lr = cfg.optimizer.lr
        self._build_execution()

        self.loaders = train_loaders(cfg, spec.augment, device, ranks, data_root)
        x_test, y_test = load_raw(cfg.dataset, "test", root=data_root)
        self.x_test, self.y_test = x_test.to(device), y_test.to(device)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch_start_state = self.data_generator.get_state()

        self.position = Position()
        self.totals = EpochTotals.zeros(device)
        self.log_mark = LogMark()
        self._epoch_clock = time.perf_counter()
        self.history: list[dict[str, Any]] = []  # epoch records
        self.best_value: float | None = None
        self.status = Status(pid=None, epochs=cfg.epochs, batches=len(self.loaders[False]),
                             device=str(device))
        self.provenance = provenance()
        self.snapshot_epochs = set(snapshot_epochs)  # after these epochs, keep the state for forks (fork.py)
        self.init_digest = self.initial_digest()  # forks compare where two runs started (checkpoints carry it)

    def initial_digest(self) -> str:
        """A digest of the model, the auxiliary state and the RNG (right after construction: the initial state)."""
        aux = self.auxiliary.state_dict() if self.auxiliary is not None else {}
        rng = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [])
        return state_digest(self.model.state_dict(), aux, rng=rng)

    def _build_model(self) -> nn.Module:
        """The defense's model on the device, in the configured memory layout (SyncBatchNorm under DDP on CUDA)."""
        cfg, spec, device, ranks = self.cfg, self.dataset, self.device, self.ranks
        norm = self.recipe["normalize"]
        model = create_model(cfg.model.name, spec.channels, spec.num_classes, spec.image_size,
                             normalize=(norm["mean"], norm["std"]) if norm else None, **cfg.model.options)
        model = self.defense.transform_model(model).to(device)
        perf = cfg.performance
        if perf.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            set_cudnn_benchmark(perf.cudnn_benchmark)
        sync_bn = cfg.distributed.sync_batchnorm
        if ranks.enabled and sync_bn is True and device.type != "cuda":
            raise WorkbenchError("distributed.sync_batchnorm: true needs CUDA (PyTorch's SyncBatchNorm is GPU-only); "
                                 "use auto or false on the CPU")
        if ranks.enabled and device.type == "cuda" and sync_bn in (True, "auto"):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _build_execution(self) -> None:
        """How the model runs: compiled or eager, autocast dtype, memory layout, DDP. Attacks (adversarial
        training and evaluation) run the same compiled model; their perturbations stay float32."""
        cfg, device, ranks = self.cfg, self.device, self.ranks
        perf = cfg.performance
        self.amp = resolve_amp(perf.amp, device)
        self.precision = Precision(self.amp, perf.channels_last)
        self.net = compile_model(self.model, perf.compile_mode) if perf.compile_mode else self.model
        self.scaler = torch.amp.GradScaler(device.type) if self.amp is torch.float16 else None
        self.loss_module: nn.Module = DefenseLoss(self.net, self.auxiliary, self.defense)
        if ranks.enabled:
            # Auxiliary state (heads, prototypes) is unused during a CE warm-up: let DDP find unused parameters.
            self.loss_module = DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.auxiliary is not None)
        self.adversary = AdversarialBatcher(cfg.adv_train, self.net, cfg.seed, rank=ranks.rank,
                                            precision=self.precision)

    # -- evaluation -------------------------------------------------------------------------
    def eval_attack(self):
        e = self.cfg.eval
        if e.attack == "fgsm":
            attack = FGSM(self.net, eps=e.eps, seed=0)
        else:
            attack = PGD(self.net, eps=e.eps, steps=e.steps, restarts=e.restarts, seed=0,
                         step_size=resolve_step_size(e.step_size, e.eps, e.steps))
        attack.precision = self.precision
        return attack

    def _test_share(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous share of the first n test samples (all of them for one process)."""
        n = min(n, len(self.y_test))
        r, w = self.ranks.rank, self.ranks.world
        lo, hi = n * r // w, n * (r + 1) // w
        return self.x_test[lo:hi], self.y_test[lo:hi]

    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Clean (and every `robust_every` epochs, robust) test accuracy after `epoch` (1-based); under DDP
        each rank evaluates its share of the test samples and the counts are summed."""
        e = self.cfg.eval
        out: dict[str, Any] = {"test_clean_acc": None, "test_robust_acc": None}
        last = epoch == self.cfg.epochs
        t0 = time.perf_counter()
        if e.clean_every and (epoch % e.clean_every == 0 or last):
            n = min(e.clean_subset or len(self.y_test), len(self.y_test))
            x, y = self._test_share(n)
            correct = collective.sum_(clean_correct(self.net, x, y, e.batch_size, self.precision))
            out["test_clean_acc"] = int(correct) / max(n, 1)
        if e.robust_every and (epoch % e.robust_every == 0 or last):
            n = min(e.robust_subset, len(self.y_test))
            x, y = self._test_share(n)
            robust = collective.sum_(robust_correct(self.eval_attack(), x, y, e.batch_size))
            out["test_robust_acc"] = int(robust) / max(n, 1)
        out["eval_seconds"] = time.perf_counter() - t0
        return out

    def best_key(self) -> str:
        by = self.cfg.eval.best_by
        if by == "auto":
            by = "robust" if self.cfg.eval.robust_every else "clean"
        return f"test_{by}_acc"

    # -- checkpoints ------------------------------------------------------------------------
    def _own_rng(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "adversary": self.adversary.state()}

    def global_totals(self) -> EpochTotals:
        """The epoch's sums over every rank (one collective); the totals themselves for one process."""
        t = self.totals
        if not self.ranks.enabled:
            return t
        keys = sorted(t.parts)
        packed = torch.stack([t.loss.double(), t.correct.double(), torch.tensor(float(t.seen), device=self.device,
                              dtype=torch.float64), *(t.parts[k].double() for k in keys)])
        collective.sum_(packed)
        out = EpochTotals(packed[0].float(), packed[1].round().long(), int(packed[2]), t.seconds)
        out.parts = {k: packed[3 + i].float() for i, k in enumerate(keys)}
        return out

    def checkpoint_data(self, totals: EpochTotals) -> dict[str, Any]:
        """The state to resume from (`totals`: the epoch's sums over every rank); a collective under DDP (every
        rank calls it at the same step)."""
        ranks_rng = collective.gather_objects(self._own_rng())
        rng = {**ranks_rng[0], "data_epoch_start": self.epoch_start_state,
               "ranks": ranks_rng if self.ranks.enabled else None}
        return {
            "model": self.recipe,
            "state_dict": self.model.state_dict(),
            "auxiliary": self.auxiliary.state_dict() if self.auxiliary is not None else None,
            "defense_state": self.defense.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "position": {"epoch": self.position.epoch, "batch": self.position.batch, "step": self.position.step},
            "totals": totals.state(),
            "log_mark": asdict(self.log_mark),
            "rng": rng,
            "best_value": self.best_value,
            "history": self.history,
            "config": self.cfg.model_dump(mode="json"),
            "dataset": self.cfg.dataset,
            "provenance": self.provenance,
            "world_size": self.ranks.world,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "init_digest": self.init_digest,
        }

    def save(self, best: bool = False) -> None:
        # Never write a non-finite state over the last good checkpoint.
        totals = self.global_totals()
        if not math.isfinite(float(totals.loss)):
            raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {self.position.epoch + 1}; {self._kept()}")
        data = self.checkpoint_data(totals)
        if self.ranks.main:  # one writer; the others wait for it at their next collective
            save_checkpoint(data, self.run.last)
            if best:
                save_checkpoint(data, self.run.best)

    def restore(self, path) -> None:
        self._load(read_checkpoint(path))

    def fork(self, snapshot: Path) -> str | None:
        """Start from another run's state kept after one of its epochs (`fork.write_snapshot`), as though this
        run had trained those epochs itself; None, or why it would not have (then nothing changed)."""
        from ..config.profiles import validate_config

        if self.ranks.enabled:
            return "a fork starts in one process (run it without --devices)"
        data = read_checkpoint(snapshot / "last.pt")
        own = self.initial_digest()
        if not data.get("init_digest"):
            return "its checkpoint has no digest of the run's initial state"
        if data["init_digest"] != own:
            return "the runs start from different states (model, auxiliary state or RNG)"
        position = data["position"]
        if position["batch"] != 0:
            return "it was not taken at the end of an epoch"
        source = validate_config(data["config"], str(snapshot / "last.pt"))
        history = list(data.get("history") or [])
        epochs = position["epoch"]
        batches = {adv: len(loader) for adv, loader in self.loaders.items()}
        why = fork_refusal(source, self.cfg, epochs, self.dataset.num_classes, history, batches)
        if why is not None:
            return why
        same_defense = source.defense == self.cfg.defense
        if self.ranks.main and (snapshot / "metrics.jsonl").exists():
            shutil.copyfile(snapshot / "metrics.jsonl", self.run.metrics)  # _load truncates it to the epoch
        self._load(data, defense_state=same_defense,
                   adversary=uses_adversary(self.cfg, self.defense, epochs, history))
        self.init_digest = own
        self.best_value = self._best_of_history()
        if self.ranks.main and self.best_value is not None and self.best_value == data.get("best_value"):
            best = read_checkpoint(snapshot / "best.pt")
            best.update(model=self.recipe, config=self.cfg.model_dump(mode="json"), init_digest=own)
            save_checkpoint(best, self.run.best)
        self.save()
        return None

    def _best_of_history(self) -> float | None:
        """The best value among the epoch records that compete for best.pt (the defense's last phase only)."""
        key, best = self.best_key(), None
        for rec in self.history:
            if rec["phase"] == self.final_phase() and rec.get(key) is not None and (best is None or rec[key] > best):
                best = rec[key]
        return best

    def _load(self, data: dict[str, Any], defense_state: bool = True, adversary: bool = True) -> None:
        """Take a checkpoint's state; a fork keeps this run's own defense state and training-attack generators
        where the shared epochs never used them."""
        self.model.load_state_dict(data["state_dict"])
        if self.auxiliary is not None and data.get("auxiliary") is not None:
            self.auxiliary.load_state_dict(data["auxiliary"])
        if defense_state:
            self.defense.load_state_dict(data.get("defense_state") or {})
        self.optimizer.load_state_dict(data["optimizer"])
        if self.scaler is not None and data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        p = data["position"]
        self.position = Position(p["epoch"], p["batch"], p["step"])
        # The saved totals are the sums over every rank: rank 0 carries them on, the others restart at zero.
        self.totals = EpochTotals.from_state(data["totals"], self.device) if self.ranks.main else \
            EpochTotals.zeros(self.device)
        self.totals.seconds = data["totals"]["seconds"]
        # Checkpoints before log marks were saved: the first record after the resume covers the steps since it.
        saved = data["totals"]
        mark = data.get("log_mark") or {"loss": saved["loss"], "correct": saved["correct"], "seen": saved["seen"]}
        self.log_mark = LogMark(float(mark["loss"]), int(mark["correct"]), int(mark["seen"]),
                                {k: float(v) for k, v in (mark.get("parts") or {}).items()})
        rng = data["rng"]
        self.epoch_start_state = rng["data_epoch_start"]  # the data order is global: any world size replays it
        saved_ranks = rng.get("ranks") or [rng]
        if len(saved_ranks) == self.ranks.world:
            own = saved_ranks[self.ranks.rank]
            torch.set_rng_state(own["torch"])
            if own.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(own["cuda"], self.device)
            exact = self.adversary.load_state(own["adversary"], self.device, self.position.step) if adversary else True
        else:
            # A different number of devices: the batches are the same, each rank's random draws cannot be.
            torch.manual_seed(self.cfg.seed + 1_000_003 * (self.position.step + 1) + self.ranks.rank)
            if adversary:
                self.adversary.reseed(saved_ranks[0]["adversary"], self.position.step)
            exact = False
            if self.ranks.main:
                print(f"note: resumed on {self.ranks.world} device(s), saved on {len(saved_ranks)}: the batches "
                      "continue exactly, per-rank random draws (attack starts, dropout) are reseeded", flush=True)
        if not exact and len(saved_ranks) == self.ranks.world and self.ranks.main:
            print(f"note: resumed on {self.device.type}; the adversarial-training attack's random starts are "
                  "reseeded (a generator state does not carry across devices)", flush=True)
        self.best_value = data.get("best_value")
        self.history = list(data.get("history", []))
        # Drop metric lines written after this checkpoint, so no step appears twice.
        pos = self.position
        if self.ranks.main:
            truncate_metrics(self.run.metrics, lambda r: (r.get("step", 0) <= pos.step)
                             and not (r.get("kind") == "epoch" and r.get("epoch", 0) > pos.epoch))

    def start_fresh(self) -> None:
        """No checkpoint yet: drop metric lines a killed earlier attempt may have written."""
        if self.ranks.main:
            truncate_metrics(self.run.metrics, lambda r: False)
        if self.ranks.enabled:  # per-rank draws (dropout, noise) differ; the model is built from the shared seed
            torch.manual_seed(self.cfg.seed + self.ranks.rank)

    # -- the loop ---------------------------------------------------------------------------
    def write_status(self, state: str, message: str = "") -> None:
        if not self.ranks.main:
            return
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
        # Killed between an epoch's checkpoint and its snapshot: write it now (one process: save is a collective).
        at = self.position
        if not self.ranks.enabled and at.batch == 0 and at.epoch in self.snapshot_epochs \
                and not self.run.snapshot(at.epoch).is_dir():
            self.save()  # with this version's checkpoint fields (the initial state's digest)
            write_snapshot(self.run, at.epoch)
        metrics = MetricsWriter(self.run.metrics) if self.ranks.main else NullWriter()
        self.reporter.start(cfg.epochs, len(self.loader_for(self.position.epoch)), self.position.epoch,
                            self.position.batch)
        self.write_status("running")
        try:
            with self.stop:
                state, message = self._loop(metrics)
        except (NonFiniteLoss, UnhealthyTraining) as exc:
            state, message = "failed", str(exc)
        except BaseException as exc:  # record the failure for `runs` and the TUI, then re-raise
            self.reporter.close()
            metrics.close()
            self._record_failure(exc)
            raise
        self.write_status(state, message)
        self.reporter.close()
        metrics.close()
        return state

    def stopped_before_start(self) -> str:
        """A stop signal came during set-up (loading data, building the model): record it; nothing to save."""
        self.status.pid = os.getpid()
        self._refresh_best()
        self.write_status("stopped", f"stopped by {self._stop_name()} before training started; resume to continue")
        return "stopped"

    def _record_failure(self, exc: BaseException) -> None:
        """status.json says why the run failed; a status that cannot be written (a full disk) must not hide
        the original error."""
        text = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
        try:
            self.write_status("failed", text.splitlines()[0][:300] if text.strip() else type(exc).__name__)
        except (WorkbenchError, OSError):
            pass

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

    def _step(self, x: torch.Tensor, y: torch.Tensor, ctx_args: dict[str, Any], adversarial: bool,
              global_n: int) -> None:
        """One optimizer step on this rank's share of a global batch; sums stay on the device."""
        cfg = self.cfg
        clean_sizes, sizes = ctx_args.pop("clean_sizes"), None
        shares = clean_sizes if self.ranks.enabled else None
        x_in, y_in, adv_mask = self.adversary.make_batch(x, y, shares) if adversarial else (x, y, None)
        if self.precision.channels_last:
            x_in = channels_last(x_in)
        if self.ranks.enabled:  # every rank's row count after the adversary, known without asking the others
            sizes = tuple(self.adversary.output_size(n) if adversarial else n for n in clean_sizes)
        ctx = BatchContext(**ctx_args, is_adversarial=adv_mask, rank_sizes=sizes)
        with autocast(self.device, self.amp):
            loss, logits, parts = self.loss_module(x_in, y_in, ctx)
        n = y_in.shape[0]
        # DDP averages gradients over ranks; weighting each rank's mean loss by its share of the global batch
        # makes that average the global batch's mean even when the shares differ by a sample.
        weight = n * self.ranks.world / global_n if self.ranks.enabled else 1.0
        objective = loss if weight == 1.0 else loss * weight
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            self.scaler.unscale_(self.optimizer)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            objective.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
        self.defense.after_step(ctx)

        # Accumulate on the device; read back only at log points (no per-step sync). A nan/inf loss poisons
        # the running sum, so checking the sum there catches it.
        self.totals.loss.add_(loss.detach().float(), alpha=n)
        self.totals.correct.add_((logits.detach().argmax(1) == y_in).sum())
        self.totals.seen += n
        for k, v in parts.items():
            self.totals.parts[k] = self.totals.parts.get(k, 0) + v.detach().float() * n

    def _diverged_tensor(self) -> str | None:
        """Under DDP: the first trained tensor (model parameter, defense parameter or buffer) whose value differs
        between ranks, else None. DDP keeps them bitwise identical; a defense that updated its state from the
        local batch would not, and training on would silently average different models."""
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        if self.auxiliary is not None:
            named += [(f"auxiliary.{n}", t) for n, t in self.auxiliary.named_parameters()]
            named += [(f"auxiliary.{n}", t) for n, t in self.auxiliary.named_buffers()]
        fingerprint = torch.stack([torch.stack([t.detach().double().sum(), t.detach().double().abs().sum()])
                                   for _, t in named])
        ranks = collective.all_gather(fingerprint)
        differs = torch.stack([(r != ranks[0]).any(1) for r in ranks]).any(0)
        return next((name for (name, _), bad in zip(named, differs.tolist()) if bad), None)

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGTERM/SIGINT (one collective under DDP, so every rank stops at the same step)."""
        if not self.ranks.enabled:
            return self.stop.requested
        flag = torch.tensor(1.0 if self.stop.requested else 0.0, device=self.device)
        return bool(collective.sum_(flag) > 0)

    def _stop_name(self) -> str:
        return self.stop.name

    def _loop(self, metrics: MetricsWriter) -> tuple[str, str]:
        cfg = self.cfg
        self.model.train()
        while self.position.epoch < cfg.epochs:
            epoch = self.position.epoch
            if self.position.batch == 0 and self.defense.reset_optimizer_at(epoch, cfg.epochs, self.history):
                # A new training phase starts with a fresh optimizer state (the papers' phase-2 scripts).
                self.optimizer = build_optimizer(self.params, cfg.optimizer)
            stopped = self._train_epoch(epoch, metrics)
            if stopped is not None:
                return "stopped", stopped
            failed = self._end_epoch(epoch, metrics)
            if failed is not None:
                return "failed", failed
            if self.position.epoch < cfg.epochs and self._stop_requested():
                return "stopped", f"stopped by {self._stop_name()} after epoch {epoch + 1}; resume to continue"
        return "finished", f"finished {cfg.epochs} epochs"

    def _train_epoch(self, epoch: int, metrics: MetricsWriter) -> str | None:
        """The batches of `epoch` from the current position; the stop message if a signal ended it early."""
        cfg = self.cfg
        phase = self.phase(epoch)
        adversarial = self.adversarial(epoch)
        loader = self.loaders[adversarial]
        batches = self.status.batches = len(loader)
        self.reporter.begin_epoch(epoch, batches)
        # Every random draw of the epoch (order, augmentation) comes from this one state.
        self.data_generator.set_state(self.epoch_start_state)
        self._epoch_clock = time.perf_counter()
        last_status = time.time()
        span = self.schedule_span(epoch)  # the history changes only between epochs
        for x, y in loader.epoch(self.data_generator, start=self.position.batch):
            lr = self.base_lr * timeline.step_lr_factor(cfg, epoch, span, self.position.batch, batches)
            set_lr(self.optimizer, lr)
            clean_sizes = loader.batch_sizes(self.position.batch)
            global_n = sum(self.adversary.output_size(n) if adversarial else n for n in clean_sizes)
            self._step(x, y, {"epoch": epoch, "epochs": cfg.epochs, "step": self.position.step, "phase": phase,
                              "clean_sizes": clean_sizes}, adversarial, global_n)
            self.position.batch += 1
            self.position.step += 1
            self.reporter.batch(epoch, self.position.batch)

            log_point = self.position.step % cfg.log_every == 0 or self.position.batch == batches
            if log_point:
                self._log_step(epoch, lr, metrics)
            if time.time() - last_status > STATUS_INTERVAL:
                self.write_status("running")
                last_status = time.time()
            # One process checks every step; DDP ranks agree at log points (a collective there, not per step).
            if self.position.batch < batches and (log_point or not self.ranks.enabled) and self._stop_requested():
                self._bank_epoch_time()
                self.save()
                return (f"stopped by {self._stop_name()} in epoch {epoch + 1} at batch "
                        f"{self.position.batch}/{batches}; resume to continue")
            if cfg.checkpoint_every and self.position.step % cfg.checkpoint_every == 0 and self.position.batch < batches:
                self._bank_epoch_time()
                self.save()
        return None

    def _bank_epoch_time(self) -> None:
        """Add the epoch's training time so far to the totals (a checkpoint carries it across a resume)."""
        now = time.perf_counter()
        self.totals.seconds += now - self._epoch_clock
        self._epoch_clock = now

    def _log_step(self, epoch: int, lr: float, metrics: MetricsWriter) -> None:
        """A step record: the mean loss and accuracy since the previous log point (one device read)."""
        totals = self.global_totals()
        total_loss, total_correct = float(totals.loss), int(totals.correct)
        if not math.isfinite(total_loss):
            raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {epoch + 1} before step "
                                f"{self.position.step}; {self._kept()}")
        mark = self.log_mark
        seen = totals.seen - mark.seen
        keys = list(totals.parts)  # one device read for every part, as for loss and accuracy
        parts = dict(zip(keys, torch.stack([totals.parts[k] for k in keys]).tolist())) if keys else {}
        rec = {"kind": "step", "epoch": epoch + 1, "batch": self.position.batch, "step": self.position.step,
               "train_loss": (total_loss - mark.loss) / seen, "train_acc": (total_correct - mark.correct) / seen,
               "lr": lr, "time": time.time(), "phase": self.phase(epoch),
               **{f"loss_{k}": (v - mark.parts.get(k, 0.0)) / seen for k, v in parts.items()}}
        metrics.write(rec)
        self.reporter.log(rec)
        self.log_mark = LogMark(total_loss, total_correct, totals.seen, parts)
        # Every rank sees the same summed record, so under DDP they all stop at the same step.
        problem = self.defense.check_step(rec, self.history)
        if problem is not None:  # last.pt stays at the end of the previous epoch
            raise UnhealthyTraining(f"{problem}; {self._kept(advice='')}")

    def _end_epoch(self, epoch: int, metrics: MetricsWriter) -> str | None:
        """Evaluate, record and checkpoint the finished `epoch`; the reason if the run must fail."""
        cfg = self.cfg
        totals = self.global_totals()
        if not math.isfinite(float(totals.loss)):
            raise NonFiniteLoss(f"loss became non-finite (nan/inf) in epoch {epoch + 1}; {self._kept()}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = self.totals.seconds + time.perf_counter() - self._epoch_clock
        evals = self.evaluate(epoch + 1)
        seen = max(totals.seen, 1)
        record = {"kind": "epoch", "epoch": epoch + 1, "step": self.position.step,
                  "train_loss": float(totals.loss) / seen, "train_acc": int(totals.correct) / seen,
                  **{k: evals[k] for k in ("test_clean_acc", "test_robust_acc")},
                  "robust_eps": cfg.eval.eps if evals["test_robust_acc"] is not None else None,
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": train_seconds,
                  "eval_seconds": evals["eval_seconds"], "time": time.time(),
                  "phase": self.phase(epoch),
                  **{f"loss_{k}": float(v) / seen for k, v in totals.parts.items()},
                  **self.defense.epoch_metrics(self.model)}
        if self.ranks.enabled:
            diverged = self._diverged_tensor()
            record["ranks_in_sync"] = diverged is None
            if diverged is not None:
                metrics.write(record)
                return (f"ranks diverged in epoch {epoch + 1}: {diverged} differs between ranks; "
                        "last.pt is the previous epoch's state")
        problem = self.defense.check_epoch(record, self.history)
        if problem is not None:  # keep last.pt at the previous (good) epoch
            metrics.write(record)
            self.reporter.epoch(record)
            return problem
        self.history.append(record)
        key = self.best_key()
        # Only the defense's last phase competes for best.pt: a PC-LC run's best must not be a warm-up (CE) model.
        final_phase = record["phase"] == self.final_phase()
        improved = final_phase and record.get(key) is not None and (
            self.best_value is None or record[key] > self.best_value)
        if improved:
            self.best_value = record[key]
        self._note_accuracies(record)

        self.position = Position(epoch + 1, 0, self.position.step)
        self.totals = EpochTotals.zeros(self.device)
        self.log_mark = LogMark()
        self.epoch_start_state = self.data_generator.get_state()
        metrics.write(record)
        self.save(best=improved or not self.run.best.exists())
        if self.ranks.main and self.position.epoch in self.snapshot_epochs:
            write_snapshot(self.run, self.position.epoch)
        self.reporter.epoch(record)
        self.write_status("running")
        return None

    def phase(self, epoch: int) -> str:
        return timeline.phase(self.cfg, self.defense, epoch, self.history)

    def final_phase(self) -> str:
        return timeline.final_phase(self.cfg, self.defense, self.history)

    def adversarial(self, epoch: int) -> bool:
        return timeline.adversarial(self.cfg, self.defense, epoch, self.history)

    def loader_for(self, epoch: int) -> DeviceLoader:
        return self.loaders[self.adversarial(epoch)]

    def schedule_span(self, epoch: int) -> tuple[int, int]:
        return timeline.schedule_span(self.cfg, self.defense, epoch, self.history)

    def _kept(self, advice: str = " (try a lower learning rate)") -> str:
        if self.run.last.exists():
            return "stopped; checkpoints/last.pt, the last good state, is kept"
        return "stopped before any checkpoint was written" + advice
