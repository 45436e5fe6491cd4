"""`adr`: Adversary Divergence Reduction (Bui et al., ECCV'20) [P3], SPEC §3.

The network splits at a named tap: the generator f is the model up to the tap (its output z is
the intermediate representation), the classifier g is the rest. Each batch, an adversary crafts
x_a inside the L-inf ball, then the loss is

    ce_clean * CE(h(x), y) + ce_adv * CE(h(x_a), y)          label supervision, Eq. 4
  + [TRADES adversary] beta * KL(h(x) || h(x_a))            TRADES' own robust term
  + lam_lc   * L_lc    local compactness, d(z, z_a)                          Eq. 1
  + lam_gb   * L_gb    global compactness, mean_ij w_ij d(., .)              Eqs. 2-3
  + lam_conf * L_conf  conditional entropy of the predictions                Eq. 5
  + lam_smt  * L_smt   KL(h(x) || h(x_a))                                    Eq. 6

with w_ij = 1 for a same-label pair and (alpha - 1) / alpha (-0.0101 at alpha 0.99) otherwise.
The weight comes from the label indicator directly, so a batch of one class gives w = 1 everywhere
(the authors' code divides a label distance by its batch maximum: 0/0 = nan there, SPEC §3.6).

Code (default) vs paper, each a parameter:
- `distance`: "mean_l1" = mean over feature dims of |a - b| (both authors' codes), or the paper's
  p-norm "l1" | "l2" | "linf" (p = 1, 2, inf in Eq. 1). A p-norm over 1024 dims is ~1000x the
  mean, so lambda 1 means something else there.
- `detach_clean`: the clean side of the LC / GB distances and of the smoothness KL is a constant
  (stop-gradient, code); false: gradients flow through both sides (paper).
- `global_pairs`: "adv_clean" = all B^2 (adversarial i, clean j) pairs, i = j included (code);
  "clean_clean" = the paper's Eq. 3 over clean pairs (with `detach_clean`, the j side is the
  constant, so the term still trains the i side).
- `confidence`: entropy of the adversarial prediction only (code) or of both (paper's Eq. 5).
- `ce_adv`: null gives 1 with the PGD adversary (ADR PyTorch code: CE(x) + CE(x_a); its "ADV"
  baseline is this mixture with every lambda 0) and 0 with TRADES, whose KL term replaces it.
  The TF code uses 0.5 / 0.5.

Adversaries, crafted in eval mode (dropout off, BN running statistics) from input gradients only,
each step projected onto the eps ball and [0, 1]:
- "pgd" (ADV, Madry): uniform random start, `steps` signed steps on the summed CE;
- "trades": start x + init_std * N(0, 1), signed steps on the summed KL(h(x) || h(x')).
Every term is logged (unweighted) in `LossOutput.parts`, plus `adv_acc`, the training accuracy on
x_a. Evaluation attacks the plain CE (`attack_loss` is None), as the paper does.

Issue 19: at the paper's lambda 1 on SmallCNN the ADR terms grow z (stop-gradient LC) or kill its
ReLUs (full gradient) within a few dozen steps, and the run collapses to one class. Labelled variants
beside the paper's setting, each a parameter or a profile key:
- `warmup_epochs`: plain ADV (CE(x) + CE(x_a), every lambda 0) for the first k epochs, phase "adv",
  then the ADR terms, phase "adr" (a function of the epoch, so a resumed run replays it);
- smaller lambdas; `model.feature_norm` (small_cnn: BN or LayerNorm before z); the run's `grad_clip`.
Feature health: the mean |z| and the fraction of z entries exactly 0 (dead ReLUs) of the clean pass
are logged in every step and epoch record (`loss_z_mean_abs`, `loss_z_dead_frac`). `check_epoch` stops
a run whose z runs away, dies, or whose clean accuracy stays at chance, with the reason (`health_*`
thresholds); `check_step` applies the first two at every log point, so a 1-epoch run is stopped too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from attacks import model_mode, project_linf
from workbench import collective
from workbench.errors import WorkbenchError

from .base import BatchContext, Defense, LossOutput
from .registry import register_defense
from .trades import kl_divergence

Distance = Literal["mean_l1", "l1", "l2", "linf"]
_P = {"mean_l1": 1.0, "l1": 1.0, "l2": 2.0, "linf": float("inf")}
TERMS = ("lc", "gb", "conf", "smt")  # the ADR terms, each weighted by its lam_*
Z_ABS, Z_DEAD = "z_mean_abs", "z_dead_frac"  # logged parts (epoch records: loss_z_mean_abs, loss_z_dead_frac)


class ADRParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    tap: str = Field("features", description="the generator's output z (a tap of the model): small_cnn 'features', "
                                             "madry_resnet 'pool'")
    adversary: Literal["pgd", "trades"] = Field("pgd", description="pgd (ADV, Madry) or trades")
    eps: Annotated[float, Field(gt=0, le=1)] = Field(0.3, description="L-inf radius of the adversary (pixels)")
    steps: Annotated[int, Field(gt=0)] = Field(20, description="adversary iterations k")
    step_size: Annotated[float, Field(gt=0)] = Field(0.01, description="adversary step eta")
    random_start: bool = Field(True, description="PGD: uniform random start in the eps ball")
    init_std: Annotated[float, Field(ge=0)] = Field(0.001, description="TRADES: std of the Gaussian start around x")
    beta: Annotated[float, Field(ge=0)] = Field(1.0, description="TRADES: weight of its KL(h(x)||h(x_a)) term "
                                                               "(1 on MNIST, 6 on CIFAR); unused with pgd")
    ce_clean: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of CE(h(x), y) (PT code 1, TF code 0.5)")
    ce_adv: Annotated[float, Field(ge=0)] | None = Field(
        None, description="weight of CE(h(x_a), y); null: 1 with pgd (PT code; TF 0.5), 0 with trades")
    lam_lc: Annotated[float, Field(ge=0)] = Field(1.0, description="local compactness weight")
    lam_gb: Annotated[float, Field(ge=0)] = Field(1.0, description="global compactness weight")
    lam_conf: Annotated[float, Field(ge=0)] = Field(0.0, description="conditional-entropy (confidence) weight")
    lam_smt: Annotated[float, Field(ge=0)] = Field(1.0, description="smoothness KL(h(x)||h(x_a)) weight")
    alpha: Annotated[float, Field(gt=0, le=1)] = Field(
        0.99, description="global weights: 1 same label, (alpha-1)/alpha otherwise")
    distance: Distance = Field("mean_l1", description="mean_l1 (code: mean over dims of |a-b|) or the paper's "
                                                      "p-norm l1 | l2 | linf")
    detach_clean: bool = Field(True, description="clean side of LC/GB/smoothness is a constant (code); "
                                                 "false: gradients through both (paper)")
    global_pairs: Literal["adv_clean", "clean_clean"] = Field(
        "adv_clean", description="GB pairs: all B^2 (adversarial i, clean j) incl. i=j (code), or clean pairs (paper)")
    confidence: Literal["adversarial", "both"] = Field(
        "adversarial", description="entropy of the adversarial prediction (code) or of clean and adversarial (paper)")
    warmup_epochs: Annotated[int, Field(ge=0)] = Field(
        0, description="epochs of plain ADV (every ADR term off, phase 'adv') before the ADR terms start "
                       "(0: from the start, the paper)")
    # Feature health (check_epoch): defaults that a healthy ADV run does not reach; null switches a rule off.
    health_max_growth: Annotated[float, Field(gt=1)] | None = Field(
        10.0, description="stop when an epoch's mean |z| exceeds this many times the run's first epoch's "
                          "(the last 'adv' epoch's after a warm-up): features running away")
    health_max_dead: Annotated[float, Field(gt=0, le=1)] | None = Field(
        0.99, description="stop when this fraction of z's entries is exactly 0 over an epoch: dead ReLUs "
                          "(ADV itself sparsifies z: 0.31 -> 0.56 in its first 240 MNIST steps)")
    health_chance_epochs: Annotated[int, Field(gt=0)] | None = Field(
        3, description="stop after this many epochs in a row at chance clean accuracy (below 1.5 / classes)")

    @property
    def ce_adv_weight(self) -> float:
        if self.ce_adv is not None:
            return self.ce_adv
        return 1.0 if self.adversary == "pgd" else 0.0


# -- the terms ---------------------------------------------------------------------------------------------------------
def pairwise_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """(len(a), len(b)) distances between the rows of two (N, D) feature matrices. No matmul shortcut
    for p = 2: it is inexact, and its gradient is nan at a zero distance (the i = j pairs)."""
    d = torch.cdist(a.float().unsqueeze(0), b.float().unsqueeze(0), p=_P[distance],
                    compute_mode="donot_use_mm_for_euclid_dist").squeeze(0)
    return d / a.shape[1] if distance == "mean_l1" else d


def rowwise_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-row distance between two (N, D) feature matrices (zero gradient, not nan, at a zero distance)."""
    diff = a.float() - b.float()
    if distance == "mean_l1":
        return diff.abs().mean(1)
    return torch.linalg.vector_norm(diff, ord=_P[distance], dim=1)


def global_weights(y_i: torch.Tensor, y_j: torch.Tensor, alpha: float) -> torch.Tensor:
    """w_ij = (alpha - [y_i != y_j]) / alpha: 1 for a same-label pair, (alpha - 1) / alpha otherwise."""
    different = (y_i[:, None] != y_j[None, :]).float()
    return (alpha - different) / alpha


def local_compactness(z: torch.Tensor, z_adv: torch.Tensor, distance: str = "mean_l1") -> torch.Tensor:
    """L_lc: mean over the batch of d(z_i, z_adv_i) (pass z detached for the code's stop-gradient)."""
    return rowwise_distance(z, z_adv, distance).mean()


def global_compactness(z_i: torch.Tensor, y_i: torch.Tensor, z_j: torch.Tensor, y_j: torch.Tensor,
                       alpha: float = 0.99, distance: str = "mean_l1") -> torch.Tensor:
    """L_gb: mean over all len(z_i) x len(z_j) pairs (i = j included) of w_ij * d(z_i, z_j)."""
    return (global_weights(y_i, y_j, alpha) * pairwise_distance(z_i, z_j, distance)).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample -h^T log h of softmax(logits)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


# -- feature health ----------------------------------------------------------------------------------------------------
def feature_stats(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean |z| and the fraction of z's entries exactly 0 (a dead ReLU's output), logged per batch."""
    z = z.detach().float()
    return {Z_ABS: z.abs().mean(), Z_DEAD: (z == 0).float().mean()}


def clean_accuracy(record: dict) -> float:
    # ADR's training accuracy is on the clean half (its logits are the clean pass's): the fallback when the
    # epoch has no test clean accuracy.
    acc = record.get("test_clean_acc")
    return record["train_acc"] if acc is None else acc


def dead_features(record: dict, history: Sequence[dict], p: ADRParams, k: int,
                  z_initial: dict | None = None) -> str | None:
    dead = record.get(f"loss_{Z_DEAD}")
    if p.health_max_dead is None or dead is None or dead <= p.health_max_dead:
        return None
    return f"features died: {dead:.1%} of z is exactly 0 (dead ReLUs; defense.health_max_dead {p.health_max_dead:g})"


def feature_base(record: dict, history: Sequence[dict], z_initial: dict | None = None) -> dict | None:
    """The record mean |z| growth is measured from: the last epoch of an earlier phase (the ADV warm-up), else
    the run's first epoch, else (within the first epoch, for the step check) mean |z| at initialisation."""
    earlier = [r for r in history if r.get("phase") != record.get("phase")]
    if earlier:
        return earlier[-1]
    return history[0] if history else z_initial


def runaway_features(record: dict, history: Sequence[dict], p: ADRParams, k: int,
                     z_initial: dict | None = None) -> str | None:
    base, key = feature_base(record, history, z_initial), f"loss_{Z_ABS}"
    if p.health_max_growth is None or base is None or not base.get(key) or record.get(key) is None:
        return None
    now, ref = record[key], base[key]
    if now <= p.health_max_growth * ref:
        return None
    where = (f"in epoch {base['epoch']}" if base.get("kind") != "step" else
             "at initialisation" if base["step"] == 0 else f"in the run's first {base['step']} steps")
    return (f"features ran away: mean |z| {now:.3g}, {now / ref:.1f}x its {ref:.3g} {where} "
            f"(defense.health_max_growth {p.health_max_growth:g})")


def chance_predictions(record: dict, history: Sequence[dict], p: ADRParams, k: int,
                       z_initial: dict | None = None) -> str | None:
    n = p.health_chance_epochs
    recent = [*history, record][-n:] if n else []
    if not n or len(recent) < n or any(clean_accuracy(r) >= 1.5 / k for r in recent):
        return None
    return (f"predictions collapsed: clean accuracy at chance ({clean_accuracy(record):.1%}) for {n} epoch(s) "
            f"in a row (defense.health_chance_epochs {n})")


HEALTH_RULES = (dead_features, runaway_features, chance_predictions)  # per epoch
STEP_RULES = (dead_features, runaway_features)  # per log point: a window's clean accuracy is too noisy for chance


@register_defense
class ADR(Defense):
    name = "adr"
    paper = "Adversary Divergence Reduction [P3] (Bui et al., ECCV'20): local/global compactness at a tap + AT"
    Params = ADRParams
    crafts_adversarial = True

    def transform_model(self, model):
        # No change to the model: only check the tap exists (profile load runs this on a meta model).
        taps = getattr(model, "taps", None)
        if taps is None:
            raise WorkbenchError(f"model {type(model).__name__} exposes no taps; adr needs a TapNet")
        if self.params.tap not in taps:
            raise WorkbenchError(f"unknown tap {self.params.tap!r}; this model's taps are: {', '.join(taps)}")
        return model

    # -- phases and health ----------------------------------------------------------------------------------------
    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        if self.params.warmup_epochs >= cfg.epochs:
            raise WorkbenchError(f"warmup_epochs {self.params.warmup_epochs} leaves no ADR epoch in a run of "
                                 f"{cfg.epochs} epochs")

    def phase(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> str:
        return "adv" if epoch < self.params.warmup_epochs else "adr"

    def weights(self, phase: str = "adr") -> dict[str, float]:
        """The lambda of each ADR term in a phase: all 0 in the ADV warm-up."""
        return {k: 0.0 if phase == "adv" else getattr(self.params, f"lam_{k}") for k in TERMS}

    def check_epoch(self, record: dict, history: list[dict]) -> str | None:
        # Issue 19: at lambda 1 z ran away or died within an epoch and the model predicted one class; stop then
        # rather than train a broken model for 100 epochs.
        for rule in HEALTH_RULES:
            reason = rule(record, history, self.params, self.num_classes)
            if reason is not None:
                return (f"ADR stopped in epoch {record['epoch']}, {reason}: try defense.warmup_epochs, smaller "
                        "lambdas, model.feature_norm or grad_clip; last.pt, if any, is the epoch before")
        return None

    def check_step(self, record: dict, history: list[dict]) -> str | None:
        # The first epoch's break (the paper's lambda 1 collapses within ~40 steps) is only seen here: the same
        # dead and runaway rules over the steps since the previous log point.
        if record.get(f"loss_{Z_ABS}") is None:
            return None
        if self._z_initial is None and not history:  # a run resumed from a checkpoint without the base
            self._z_initial = {k: record[k] for k in ("kind", "step", f"loss_{Z_ABS}")}
        for rule in STEP_RULES:
            reason = rule(record, history, self.params, self.num_classes, self._z_initial)
            if reason is not None:
                return (f"ADR stopped in epoch {record['epoch']} at step {record['step']}, {reason}: try "
                        "defense.warmup_epochs, smaller lambdas, model.feature_norm or grad_clip")
        return None

    # Mean |z| at initialisation (the run's first batch, before any update), the base of the first epoch's step
    # check. Kept in checkpoints, so a run resumed within its first epoch measures growth from the same point.
    # Not the first step record: over its log_every steps a collapsing z has already grown (the paper's ADR-ADV
    # averaged 1.4 over its first 20 steps from 0.68, and never reached 10x that).
    _z_initial: dict | None = None

    def _note_initial_features(self, z_abs: torch.Tensor) -> None:
        value = z_abs.detach().float().clone()
        collective.sum_(value)  # under DDP every rank must hold the same base, or they stop at different steps
        self._z_initial = {"kind": "step", "step": 0, f"loss_{Z_ABS}": float(value) / collective.world_size()}

    def state_dict(self) -> dict:
        return {"z_initial": self._z_initial} if self._z_initial is not None else {}

    def load_state_dict(self, state: dict) -> None:
        window = state.get("z_initial")
        self._z_initial = dict(window) if isinstance(window, dict) else None

    # -- the adversary ---------------------------------------------------------------------------------------------
    def craft(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_a in the eps ball around x and in [0, 1], from input gradients in eval mode."""
        p = self.params
        with model_mode(model, training=False):
            if p.adversary == "trades":
                with torch.no_grad():
                    logits_clean = model(x)
                x_adv = x + p.init_std * torch.randn_like(x)
            elif p.random_start:
                x_adv = x + torch.empty_like(x).uniform_(-p.eps, p.eps)
            else:
                x_adv = x.clone()
            x_adv = project_linf(x_adv, x, p.eps).detach()
            for _ in range(p.steps):
                x_adv.requires_grad_(True)
                logits = model(x_adv)
                if p.adversary == "trades":
                    loss = kl_divergence(logits, logits_clean).sum()
                else:
                    loss = F.cross_entropy(logits.float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)  # input gradient only: no parameter grads
                x_adv = x_adv.detach() + p.step_size * grad.sign()
                x_adv = project_linf(x_adv, x, p.eps)
        return x_adv.detach()

    # -- the loss --------------------------------------------------------------------------------------------------
    def terms(self, logits: torch.Tensor, z: torch.Tensor, logits_adv: torch.Tensor, z_adv: torch.Tensor,
              y: torch.Tensor, rank_sizes: tuple[int, ...] | None = None,
              weights: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Every term of the ADR objective (unweighted), from the clean and adversarial forward passes.
        Terms whose weight (`weights`, default the lambdas) is 0 are computed without a graph (they are only
        logged). Under DDP the global term's second index runs over the whole batch (`rank_sizes`: every rank's
        share), as in one process."""
        p, w = self.params, weights or self.weights()
        z, z_adv = z.flatten(1), z_adv.flatten(1)
        anchor_z = z.detach() if p.detach_clean else z
        anchor_logits = logits.detach() if p.detach_clean else logits

        def maybe_grad(weight: float):
            return contextlib.nullcontext() if weight > 0 else torch.no_grad()

        out: dict[str, torch.Tensor] = {
            "ce_clean": F.cross_entropy(logits.float(), y),
            "ce_adv": F.cross_entropy(logits_adv.float(), y),
        }
        if p.adversary == "trades":
            out["kl"] = kl_divergence(logits_adv, logits).mean()  # TRADES' own term: both sides trained
        with maybe_grad(w["lc"]):
            out["lc"] = local_compactness(anchor_z, z_adv, p.distance)
        with maybe_grad(w["gb"]):
            peers_z, _ = collective.gather_rows(anchor_z, rank_sizes)
            peers_y, _ = collective.gather_rows(y, rank_sizes)
            rows = z_adv if p.global_pairs == "adv_clean" else z
            out["gb"] = global_compactness(rows, y, peers_z, peers_y, p.alpha, p.distance)
        with maybe_grad(w["conf"]):
            conf = entropy(logits_adv).mean()
            out["conf"] = conf + entropy(logits).mean() if p.confidence == "both" else conf
        with maybe_grad(w["smt"]):
            out["smt"] = kl_divergence(logits_adv, anchor_logits).mean()
        return out

    def combine(self, t: dict[str, torch.Tensor], weights: dict[str, float] | None = None) -> torch.Tensor:
        p = self.params
        loss = p.ce_clean * t["ce_clean"] + p.ce_adv_weight * t["ce_adv"]
        if "kl" in t:
            loss = loss + p.beta * t["kl"]
        for key, lam in (weights or self.weights()).items():
            if lam > 0:
                loss = loss + lam * t[key]
        return loss

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        x_adv = self.craft(model, x, y)
        tap = self.params.tap
        # Two passes rather than one on the concatenation: batch-norm statistics stay per input kind.
        logits, feats = model(x, taps=[tap])
        logits_adv, feats_adv = model(x_adv, taps=[tap])
        weights = self.weights(self.batch_phase(ctx))
        t = self.terms(logits, feats[tap], logits_adv, feats_adv[tap], y, ctx.rank_sizes, weights)
        parts = {k: v.detach() for k, v in t.items()}
        parts["adv_acc"] = (logits_adv.detach().argmax(1) == y).float().mean()
        parts.update(feature_stats(feats[tap]))
        if ctx.step == 0 and self._z_initial is None:
            self._note_initial_features(parts[Z_ABS])
        return LossOutput(self.combine(t, weights), logits, parts)
