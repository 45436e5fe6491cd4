"""Deep supervision: losses on features taken from several depths of a model ([P0] Eqs. 7-9, [P1] §4).

A *head* names a tap of the model and, optionally, an auxiliary branch that maps it to a
low-dimensional feature (global pooling, then FC layers), as in the PCL papers' Table 1:
CNN-6 supervises its own GAP (128), FC 512 and FC 64 outputs; ResNet-110 adds GAP -> FC 512
after stage 2. Branches are trainable state beside the model (`Defense.attach`): they are
checkpointed but never part of the inference path, so `workbench.load_model` returns the plain
classifier, and every output of the classifier is independent of the branches.

`DeeplySupervised` is the shared base of `pcl` and the `ds_*` variants: CE on the final logits
(or a linear probe, for losses that train the representation alone), plus tau * sum over heads
of a per-sample head loss, after `warmup_epochs` of CE alone. Subclasses give the head loss.
With `warmup_until_clean`, the warm-up lasts at least `warmup_epochs` and ends after the first of its
epochs whose test clean accuracy reached that value, at the latest at `warmup_max_epochs` (issue 19:
the papers warm up to convergence; a fixed short warm-up let PCL drag a weak model to chance).
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from attacks import model_mode
from workbench import collective
from workbench.errors import WorkbenchError

from .base import BatchContext, Defense, LossOutput


class HeadSpec(BaseModel):
    """One supervised depth: a tap, how to pool it, and the FC widths of its auxiliary branch."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tap: str
    pool: Literal["auto", "gap", "gmp", "flatten"] = Field(
        "auto", description="feature maps: auto = global average pool; gmp = global max pool; flatten")
    fc: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list, description="FC widths of the branch")
    act: Literal["none", "relu", "prelu"] = Field("relu", description="activation between the branch's FC layers")

    @model_validator(mode="before")
    @classmethod
    def _from_tap(cls, data: Any) -> Any:
        return {"tap": data} if isinstance(data, str) else data


class Pool(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() <= 2:
            return z
        if self.mode in ("auto", "gap"):
            return z.flatten(2).mean(2)
        if self.mode == "gmp":
            return z.flatten(2).amax(2)
        return z.flatten(1)


def build_branch(spec: HeadSpec, in_dim: int, extra_out: int | None = None) -> tuple[nn.Module, int]:
    """Pool + FC layers for one head; `extra_out` appends a final FC (e.g. a classifier for ds_softmax)."""
    layers: list[nn.Module] = [Pool(spec.pool)]
    widths = [*spec.fc, *([extra_out] if extra_out else [])]
    dim = in_dim
    for i, width in enumerate(widths):
        if i > 0 and spec.act != "none":
            layers.append(nn.ReLU() if spec.act == "relu" else nn.PReLU())
        layers.append(nn.Linear(dim, width))
        dim = width
    return nn.Sequential(*layers), dim


class DSParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    heads: list[HeadSpec] = Field(
        default_factory=lambda: [HeadSpec(tap=t) for t in ("gap", "fc1", "fc2")],
        description="supervised taps (default: CNN-6's gap, fc1, fc2 [P0 Table 1]); "
                    "each a tap name or {tap, pool, fc: [widths], act}")
    tau: Annotated[float, Field(gt=0)] = Field(1.0, description="weight of the summed head losses")
    warmup_epochs: Annotated[int, Field(ge=0)] | None = Field(
        0, description="CE-only epochs before the head losses start (null: a quarter of the run)")
    reset_optimizer: bool = Field(False, description="fresh optimizer state when the head losses start")
    warmup_until_clean: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="gate: after warmup_epochs, the warm-up goes on until an epoch's test clean accuracy "
                          "reaches this (null: off)")
    warmup_max_epochs: Annotated[int, Field(gt=0)] | None = Field(
        None, description="gate: the head losses start at this epoch even if the accuracy was not reached "
                          "(null: the run's last epoch)")

    @model_validator(mode="after")
    def _some_heads(self):
        if not self.heads:
            raise ValueError("heads: at least one head is needed")
        if self.warmup_max_epochs is not None and self.warmup_until_clean is None:
            raise ValueError("warmup_max_epochs caps the gate: set warmup_until_clean too")
        return self


def sq_distances(f: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(B, K) squared Euclidean distances, in float32, never negative (the expanded form can round below 0)."""
    f, centers = f.float(), centers.float()
    d = f.pow(2).sum(1, keepdim=True) + centers.pow(2).sum(1)[None] - 2 * f @ centers.t()
    return d.clamp_min(0)


def class_means(f: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, d) per-class means of the batch features and the (K,) per-class counts. Under DDP the batch is the
    global one (sums and counts are summed over the ranks), so every rank updates its state identically."""
    f = f.detach().float()
    counts = torch.bincount(y, minlength=k).to(f.dtype)
    sums = torch.zeros(k, f.shape[1], device=f.device).index_add_(0, y, f)
    both = collective.sum_(torch.cat([sums, counts[:, None]], 1))  # one collective for both
    sums, counts = both[:, :-1], both[:, -1].round().long()
    return sums / counts.clamp_min(1)[:, None], counts


def init_new_classes(targets: list[torch.Tensor], ready: torch.Tensor, f: torch.Tensor, y: torch.Tensor) -> None:
    """Rows of `targets` (K, d) for classes seen for the first time start at the batch's class means; `ready`
    (K,) marks the classes done. [I] A row left at an arbitrary start (zero, randn) would pull its class's
    features toward a meaningless point: the collapse SPEC 1.8 describes."""
    with torch.no_grad():
        means, counts = class_means(f, y, ready.shape[0])
        new = (counts > 0) & ~ready
        for t in targets:
            t.data[new] = means[new].to(t.dtype)
        ready |= new


class PrototypeClassifier(nn.Module):
    """Nearest-prototype prediction ([P0] Eq. 6) as a differentiable classifier: logits = -||f - w_k||^2,
    with f the last head's feature, so attacks can target the nearest-prototype rule too."""

    def __init__(self, model: nn.Module, branch: nn.Module, tap: str, prototypes: torch.Tensor):
        super().__init__()
        self.model, self.branch, self.tap = model, branch, tap
        self.register_buffer("prototypes", prototypes.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -sq_distances(self.branch(self.model.features(x, self.tap)), self.prototypes)


class DeeplySupervised(Defense):
    """CE (or a probe) on the final logits + tau * sum of per-sample head losses, after a CE warm-up."""

    Params = DSParams
    # "joint": CE on the final logits trains the whole model; "probe": the final layers after the last
    # head learn from detached features, so the representation is shaped by the head losses alone.
    classifier: str = "joint"
    head_out: int | None = None  # an extra FC at the end of every branch (ds_softmax's per-head classifier)

    def __init__(self, params, num_classes: int):
        super().__init__(params, num_classes)
        self.aux: nn.Module | None = None
        self._batch: tuple[list[torch.Tensor], torch.Tensor] | None = None  # last features, for after_step
        self.in_training = False  # True inside training_loss: state may be initialized from the batch
        self._rank_sizes: tuple[int, ...] | None = None  # this step's DDP batch split (training only)

    # -- structure --------------------------------------------------------------------------------------
    @property
    def taps(self) -> list[str]:
        return list(dict.fromkeys(h.tap for h in self.params.heads))

    def attach(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        known = getattr(model, "taps", None)
        if known is None:
            raise WorkbenchError(f"{self.name} needs a model with named taps")
        unknown = [t for t in self.taps if t not in known]
        if unknown:
            raise WorkbenchError(f"unknown head tap(s) {unknown}; this model's taps are {list(known)}")
        order = [list(known).index(h.tap) for h in self.params.heads]
        if order != sorted(order):
            raise WorkbenchError(f"heads must be listed input to output (the last one is the deepest); "
                                 f"this model's taps in order: {list(known)}")
        if self.classifier == "probe" and self.params.heads[-1].tap == known[-1]:
            raise WorkbenchError("the last head cannot be the logits tap: the probe classifier reads it")
        device = next(model.parameters()).device
        with model_mode(model, training=False), torch.no_grad():
            _, feats = model(torch.zeros(2, *input_shape, device=device), taps=self.taps)
        aux = nn.Module()
        branches, dims = [], []
        for spec in self.params.heads:
            branch, dim = build_branch(spec, Pool(spec.pool)(feats[spec.tap]).flatten(1).shape[1], self.head_out)
            branches.append(branch)
            dims.append(dim)
        aux.branches = nn.ModuleList(branches).to(device)
        self.dims = dims
        self.build_state(aux, dims, device)
        self.aux = aux
        return aux

    def build_state(self, aux: nn.Module, dims: list[int], device: torch.device) -> None:
        """Add the loss's own state (prototypes, centers) to `aux`."""

    # -- phases -----------------------------------------------------------------------------------------
    def warmup(self, epochs: int) -> int:
        """The warm-up's length, or its minimum when gated."""
        w = self.params.warmup_epochs
        return epochs // 4 if w is None else w

    def warmup_cap(self, epochs: int) -> int:
        """The first epoch of the head losses at the latest."""
        p = self.params
        if p.warmup_until_clean is None:
            return self.warmup(epochs)
        return min(p.warmup_max_epochs or epochs - 1, epochs - 1)

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        w, p = self.warmup(cfg.epochs), self.params
        if w >= cfg.epochs:
            raise WorkbenchError(f"warmup_epochs {w} leaves no epoch for the {self.name} loss in a run of "
                                 f"{cfg.epochs} epochs")
        if p.warmup_until_clean is not None and not cfg.eval.clean_every:
            raise WorkbenchError("warmup_until_clean reads the test clean accuracy: set eval.clean_every >= 1")
        if p.warmup_max_epochs is not None and p.warmup_max_epochs < w:
            raise WorkbenchError(f"warmup_max_epochs {p.warmup_max_epochs} is below warmup_epochs {w}")

    def phase(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> str:
        # Gated: the head losses start after the first warm-up epoch (from warmup_epochs on) whose record reached
        # the accuracy. Only records of epochs before `epoch` are read, so a resumed run decides alike.
        if epoch < self.warmup(epochs):
            return "warmup"
        if epoch >= self.warmup_cap(epochs):
            return self.name
        target, first = self.params.warmup_until_clean, self.warmup(epochs)
        reached = any(first <= r["epoch"] <= epoch and (r.get("test_clean_acc") or 0.0) >= target for r in history)
        return self.name if reached else "warmup"

    def reset_optimizer_at(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> bool:
        return (self.params.reset_optimizer and epoch > 0 and self.phase(epoch - 1, epochs, history) == "warmup"
                and self.phase(epoch, epochs, history) != "warmup")

    def trains_like(self, other, epoch: int, epochs: int, other_epochs: int, history: Sequence[dict] = ()) -> bool:
        # A warm-up epoch is CE end to end whatever the parameters: the heads, prototypes and the prototypes'
        # own optimizers (SGD without momentum) are left untouched, so two warm-ups of the same loss match.
        both_warm = (self.phase(epoch, epochs, history) == "warmup"
                     and other.phase(epoch, other_epochs, history) == "warmup")
        return (self.name == other.name and both_warm) or super().trains_like(other, epoch, epochs, other_epochs,
                                                                              history)

    def check_epoch(self, record: dict, history: list[dict]) -> str | None:
        # SPEC 1.8: switched on too early, the pull toward class prototypes can drag a model to chance; stop
        # then rather than train a broken model for hundreds of epochs.
        warm = [r for r in history if r.get("phase") == "warmup"]
        k = self.num_classes
        if record.get("phase") == "warmup" or not warm:
            return None
        # Clean test accuracy when measured: training accuracy mixes in adversarial samples under adv_train.
        key = "test_clean_acc" if record.get("test_clean_acc") is not None and warm[-1].get("test_clean_acc") \
            is not None else "train_acc"
        before, now = warm[-1][key], record[key]
        if before > 3 / k and now < 1.5 / k:
            return (f"{self.name} collapsed to chance after the CE warm-up ({key} {now:.1%}, {before:.1%} at the "
                    "end of the warm-up): warm up longer (defense.warmup_epochs) or lower defense.tau; last.pt is "
                    "the last checkpoint written before the collapse was detected")
        return None

    # -- losses -----------------------------------------------------------------------------------------
    def head_features(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
        state = next(itertools.chain(self.aux.parameters(), self.aux.buffers()), None)
        if state is not None and state.device != x.device:  # loaded on the CPU for an attack elsewhere
            self.aux.to(x.device)
        logits, taps = model(x, taps=self.taps)
        feats = [branch(taps[h.tap]) for h, branch in zip(self.params.heads, self.aux.branches)]
        return logits, feats, taps

    def batch_peers(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows a pairwise head loss compares each sample with: the whole training batch (every rank's
        share under DDP, with gradients back to their ranks) and a (len(f), len(peers)) mask of each sample's
        own row. Outside training (attacks), the batch given."""
        peers, offset = collective.gather_rows(f, self._rank_sizes)
        peer_y, _ = collective.gather_rows(y, self._rank_sizes)
        own = torch.zeros(f.shape[0], peers.shape[0], dtype=torch.bool, device=f.device)
        rows = torch.arange(f.shape[0], device=f.device)
        own[rows, rows + offset] = True
        return peers, peer_y, own

    @abstractmethod
    def head_loss(self, i: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss of head `i` on its features `f` (B, d)."""

    def classifier_logits(self, model, logits: torch.Tensor, taps: dict) -> torch.Tensor:
        if self.classifier == "probe" and self.in_training:  # attacks need the gradient through the features
            last = self.params.heads[-1].tap
            return model.head(taps[last].detach(), last)
        return logits

    def per_sample(self, model, x, y) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list]:
        """(CE per sample, head losses per sample summed over heads, per-head means, head features)."""
        logits, feats, taps = self.head_features(model, x)
        logits = self.classifier_logits(model, logits, taps)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        total = torch.zeros_like(ce)
        parts = {}
        for i, (h, f) in enumerate(zip(self.params.heads, feats)):
            loss = self.head_loss(i, f, y)
            parts[f"{self.name}_{i}_{h.tap}"] = loss.mean()
            total = total + loss
        return ce, total, parts, (logits, feats)

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        if self.batch_phase(ctx) == "warmup":
            self._batch = None
            logits = model(x)  # CE end to end, as the papers' softmax warm-up
            return LossOutput(F.cross_entropy(logits, y), logits)
        self.in_training, self._rank_sizes = True, ctx.rank_sizes
        try:
            ce, heads, parts, (logits, feats) = self.per_sample(model, x, y)
        finally:
            self.in_training, self._rank_sizes = False, None
        self._batch = ([f.detach() for f in feats], y)
        ce, heads = ce.mean(), heads.mean()
        return LossOutput(ce + self.params.tau * heads, logits, {"ce": ce, **parts})

    def attack_loss(self):
        """The adaptive white-box objective ([P1] Table 4): CE + tau * sum of the head losses, per sample."""
        def ce_plus_heads(model, x, y):
            ce, heads, _, (logits, _) = self.per_sample(model, x, y)
            return ce + self.params.tau * heads, logits

        return ce_plus_heads

    # -- nearest-prototype prediction ------------------------------------------------------------------
    def class_prototypes(self) -> torch.Tensor | None:
        """(K, d) prototypes of the last head for nearest-prototype prediction; None if the loss has none."""
        return None

    def prototype_classifier(self, model: nn.Module) -> nn.Module:
        protos = self.class_prototypes()
        if protos is None:
            raise WorkbenchError(f"defense {self.name!r} has no class prototypes for nearest-prototype prediction")
        return PrototypeClassifier(model, self.aux.branches[-1], self.params.heads[-1].tap, protos)
