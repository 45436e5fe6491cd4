"""The attack base class: construction, the call contract and the result object.

An attack is built with the model and its hyper-parameters and called on (x, y) with
x in [0, 1]; it returns x_adv inside its norm ball and [0, 1]. It runs the model in
eval mode (configurable) and restores every module's mode afterwards; it takes
gradients with respect to the input only, so parameter `.grad` is never touched, and
it switches `requires_grad` off on the model's parameters while it runs (restoring
every flag afterwards), so no weight-gradient work or activation memory is spent.
Randomness comes from the attack's own `torch.Generator`, seeded from its settings.

Speed options (`precision`, a `workbench.accel.Precision`): the model's forward may run
under autocast (bf16/fp16) and on channels-last inputs. Every model call goes through
`self.logits(x)`, which hands the logits back in float32; x, x_adv, the perturbation,
projections, losses and gradients w.r.t. x stay float32.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from workbench.accel import FLOAT32, Precision, amp_name, autocast, channels_last, to_float32

from .losses import ATTACK_LOSSES

# A custom (adaptive) objective: (model, x, y) -> per-sample loss to maximise.
ModelLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def model_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put every submodule in train/eval mode, then restore each one's own flag."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch `requires_grad` off on the model's parameters that have it, then switch exactly those back on
    (also on an exception). Gradients w.r.t. the input still flow; no weight gradients are computed."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def nhwc_weights(model: nn.Module, x: torch.Tensor, enabled: bool = True) -> Iterator[None]:
    """On the CPU, hold the model's 4-D weights (convolution kernels) in channels-last while an attack runs.

    oneDNN then keeps the activations NHWC, where this CPU's max-pooling runs about 5x faster than NCHW
    (benchmarks/README.md). Each parameter gets its own tensor back afterwards (also on an exception).
    Outputs can differ from NCHW in the last bits (about 1e-6 on logits): which layout runs is decided by
    `prefers_nhwc` from the model and the attack alone, so a seed reproduces its result. Compiled models
    keep their layout (a change would recompile them); on a GPU the layout is `Precision.channels_last`'s.
    """
    if not enabled or x.device.type != "cpu" or x.dim() != 4 or hasattr(model, "_orig_mod"):
        yield
        return
    swapped = []
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last):
            swapped.append((p, p.data))
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, data in swapped:
            p.data = data


NHWC_MIN_SIDE = 16  # below this the pooled maps are too small for the layout to pay for its conversions


def prefers_nhwc(model: nn.Module, x: torch.Tensor, grad: bool) -> bool:
    """Whether an attack on the CPU runs this model with channels-last weights: a fixed rule, never a timing.

    Profiled on SmallCNN (MNIST, 98 rows, 2 cores): NHWC makes max-pooling ~5x faster, a forward pass
    7.4 vs 9.4 ms, but the backward pass slower (22.5 vs 20.2 ms for forward + input gradient: ReLU
    gradients come back NCHW after the flatten and take a mixed-layout path). So only forward-only
    attacks (Square, SPSA) on a model with 2-D max-pooling over images of at least NHWC_MIN_SIDE pixels
    use it. A rule rather than a timed probe: the probe's answer changed with the machine's load, and with
    it the last bits of the logits, so the same seed could give another adversarial example."""
    if grad or min(x.shape[-2:]) < NHWC_MIN_SIDE:
        return False
    return any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def as_eps(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """eps as a tensor broadcastable to `like` (a float, or one value per sample)."""
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    return e.view(-1, *([1] * (like.dim() - 1))) if e.dim() == 1 else e


def check_eps(eps: float | torch.Tensor | None) -> None:
    if eps is None:
        return
    values = eps.flatten().tolist() if isinstance(eps, torch.Tensor) else [eps]
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class StepProgress:
    """Where a running attack is, reported every step (iteration, or query for Square) of one call.

    Reading it costs nothing: every count is a host-side number the loop already has, so a
    progress hook never forces a device sync. Hooks rate-limit themselves.
    """

    stage: str  # the (sub-)attack taking the step: "pgd", or AutoAttack's "apgd_t"
    done: int  # steps this stage has taken in this call (restarts and target classes summed)
    total: int  # its budget of steps in this call
    active: int  # rows of the batch this stage is still working on (not yet fooled)
    batch: int  # rows the attack was called on
    robust: int | None = None  # ensembles: rows of the batch no stage has fooled yet (else None)
    stage_index: int = 0  # position of `stage` in the ensemble (0 for a single attack)
    stages: int = 1  # stages in the ensemble


StepHook = Callable[[StepProgress], None]


@dataclass
class StageStats:
    """What one stage of an attack call did: its seconds, the rows it attacked and the rows it broke."""

    name: str
    seconds: float
    attacked: int
    broken: int


@dataclass
class AttackResult:
    x_adv: torch.Tensor
    clean_correct: torch.Tensor  # bool (B,): the model classifies the clean input correctly
    adv_correct: torch.Tensor  # bool (B,): ...and still does on x_adv (robust)
    success: torch.Tensor  # bool (B,): the attack's goal is met on x_adv (misclassified / hits target)
    norm: torch.Tensor  # (B,) perturbation size in the attack's norm
    restart: torch.Tensor  # int (B,): restart that produced x_adv (-1: none succeeded)
    settings: dict[str, Any] = field(default_factory=dict)
    stage: torch.Tensor | None = None  # int (B,): index into `stages` of the sub-attack that succeeded (-1: none)
    stages: tuple[str, ...] = ()  # sub-attacks of an ensemble (AutoAttack); (name,) for a single attack
    stage_stats: list[StageStats] = field(default_factory=list)  # per stage, in order (one for a single attack)

    def succeeded_by(self) -> list[str | None]:
        """Per sample, the name of the (sub-)attack that produced a successful x_adv, else None."""
        stage = self.stage.tolist() if self.stage is not None else [-1] * len(self.success)
        return [self.stages[i] if i >= 0 else None for i in stage]

    @property
    def robust_accuracy(self) -> float:
        return float(self.adv_correct.float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())


NORMS = ("linf", "l2")


def rows(t: torch.Tensor | float | None, idx: torch.Tensor):
    """The rows `idx` of a per-sample tensor; scalars (and None) apply to every row as they are."""
    if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] > 1:
        return t[idx]
    return t


class Attack(ABC):
    """Base of every attack. Subclasses implement `perturb`.

    Class attributes describe the attack to the evaluation engine: `norms` it supports,
    whether it is `bounded` by eps (minimum-norm attacks like C&W and DeepFool are not:
    they report the size of the smallest perturbation they found), and `targeted_capable`.
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ("linf",)
    bounded: ClassVar[bool] = True
    targeted_capable: ClassVar[bool] = True
    # The parameter an evaluation sweeps (eps; DeepFool's max_ratio); None for one unbounded run.
    # The engine passes one value per sample, so a sweep runs as a single batch.
    sweep_param: ClassVar[str | None] = "eps"
    # Input checks read values back from the device; trusted hot loops (training) turn them off.
    validate_inputs: bool = True
    # How the model's forward runs (autocast dtype, input layout); settable after construction.
    precision: Precision = FLOAT32
    # Called with a StepProgress every step of `perturb` (see `step`); settable after construction.
    on_step: StepHook | None = None
    # CPU: run the model with channels-last weights for the call when that is faster (`prefers_nhwc`).
    # Adversarial training turns it off: there the trainer owns the model's layout (performance.channels_last).
    nhwc_on_cpu: bool = True
    # Whether `perturb` takes input gradients (False: forward passes only, e.g. Square); picks the layout.
    needs_input_grad: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor | None = 8 / 255,
        *,
        norm: str | None = None,
        loss: str | ModelLoss = "ce",
        targeted: bool = False,
        seed: int = 0,
        model_training: bool = False,
        early_stop: bool = True,
        precision: Precision | None = None,
    ):
        check_eps(eps)
        if self.bounded and eps is None:
            raise ValueError(f"{self.name} needs eps")
        norm = norm or self.norms[0]
        if norm not in self.norms:
            raise ValueError(f"{self.name} supports norm {' | '.join(self.norms)}, not {norm!r}")
        if targeted and not self.targeted_capable:
            raise ValueError(f"{self.name} has no targeted mode")
        self.model = model
        self.eps = eps
        self.norm = norm
        self.loss = loss
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else None
        self.targeted = targeted
        self.seed = seed
        self.model_training = model_training
        # Iterative attacks stop working on a sample once it is fooled (its x_adv is then a
        # valid adversarial example). Adversarial training turns this off: it wants the
        # full-strength point, not the first misclassified one.
        self.early_stop = early_stop
        self._generator: torch.Generator | None = None
        if precision is not None:
            if not isinstance(precision, Precision):
                raise ValueError(f"precision must be a workbench.accel.Precision, got {precision!r}")
            self.precision = precision

    # -- the model ----------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """model(x) under this attack's precision; the logits come back in float32."""
        return self.precision.forward(self.model, x)

    # -- randomness -------------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device.type != torch.device(device).type:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def get_rng_state(self) -> torch.Tensor | None:
        return None if self._generator is None else self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        self.generator(device).set_state(state)

    # -- objective ----------------------------------------------------------------------------
    def objective_and_logits(self, x: torch.Tensor, y: torch.Tensor,
                             target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample loss to maximise at x, and the logits when the forward pass gave them."""
        if self.loss_fn is None:
            # Adaptive: the defense's own objective, returning a loss or (loss, logits).
            # Targeted: descend the objective toward the target label instead of ascending it at y.
            # The objective runs under the attack's autocast; its outputs come back in float32.
            xin = channels_last(x) if self.precision.channels_last else x
            with autocast(x.device, self.precision.amp):
                value = self.loss(self.model, xin, y if target is None else target)
            value, logits = to_float32(value) if isinstance(value, tuple) else (to_float32(value), None)
            return (value if target is None else -value), logits
        logits = self.logits(x)
        return self.loss_fn(logits, y, target), logits

    def objective(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return self.objective_and_logits(x, y, target)[0]

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gradient of the objective w.r.t. the input only (no parameter gradients), and the logits at x."""
        x = x.detach().requires_grad_(True)
        loss, logits = self.objective_and_logits(x, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad.detach(), (None if logits is None else logits.detach())

    def input_grad(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return self.loss_grad(x, y, target)[0]

    def fooled(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample: the attack's goal is met by these logits."""
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Onto this attack's norm ball around x, intersected with [0, 1]."""
        return project_linf(x_adv, x, eps) if self.norm == "linf" else project_l2(x_adv, x, eps)

    # -- progress -------------------------------------------------------------------------------
    def step(self, done: int, total: int, active: int, batch: int) -> None:
        """Report one step to `on_step` (a no-op without a hook). Loops call it with host-side counts only."""
        if self.on_step is not None:
            self.on_step(StepProgress(self.name, done, total, active, batch))

    # -- call contract ------------------------------------------------------------------------
    @abstractmethod
    def perturb(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple:
        """Return (x_adv, restart) or (x_adv, restart, stage).

        restart: int (B,) restart index that produced x_adv, or None for single-run attacks;
        stage: int (B,) index into `stages()` of the sub-attack that succeeded (ensembles only).
        """

    def stages(self) -> tuple[str, ...]:
        return (self.name,)

    def settings(self) -> dict[str, Any]:
        """The fully resolved hyper-parameters, for reports."""
        eps = self.eps.tolist() if isinstance(self.eps, torch.Tensor) else self.eps
        loss = self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom")
        return {"attack": self.name, "norm": self.norm, "eps": eps, "loss": loss, "targeted": self.targeted,
                "seed": self.seed, "early_stop": self.early_stop, **self.extra_settings(),
                **self.precision_settings()}

    def precision_settings(self) -> dict[str, Any]:
        """The speed options, reported only when they differ from float32 (so default reports stay as they were)."""
        if self.precision == FLOAT32:
            return {}
        return {"amp": amp_name(self.precision.amp), "channels_last": self.precision.channels_last}

    def extra_settings(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        if not self.validate_inputs:
            return
        if x.dim() < 2 or y.shape[0] != x.shape[0]:
            raise ValueError("x must be a batch (B, ...) and y its B labels")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("attack inputs must be pixels in [0, 1]")
        if self.targeted and target is None:
            raise ValueError(f"{self.name} is targeted: pass target labels")

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        self._check_inputs(x, y, target)
        x = x.detach()
        t0 = time.perf_counter()
        with self._running(x):
            x_adv, restart, *stage = self.perturb(x, y, target if self.targeted else None)
            with torch.no_grad():
                clean_pred = self.logits(x).argmax(1)
                adv_pred = self.logits(x_adv).argmax(1)
        clean_correct = clean_pred == y
        success = adv_pred == target if self.targeted else adv_pred != y
        norm = perturbation_norm(x_adv - x, self.norm)
        if restart is None:
            restart = torch.where(success, 0, -1)
        stage = stage[0] if stage and stage[0] is not None else torch.where(success, 0, -1)
        stats = self.last_stage_stats()
        if stats is None:  # a single attack: one stage, every clean-correct row attacked
            stats = [StageStats(self.name, time.perf_counter() - t0, int(clean_correct.sum()),
                                int((clean_correct & success).sum()))]
        return AttackResult(x_adv.detach(), clean_correct, clean_correct & (adv_pred == y), success,
                            norm, restart, self.settings(), stage, self.stages(), stats)

    def last_stage_stats(self) -> list[StageStats] | None:
        """Ensembles: per-stage stats of the last `perturb` call; None for a single attack."""
        return None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, y, target)
        with self._running(x):
            x_adv = self.perturb(x.detach(), y, target if self.targeted else None)[0]
        return x_adv.detach()

    @contextmanager
    def _running(self, x: torch.Tensor) -> Iterator[None]:
        """What every call runs under: the attack's model mode, frozen parameters, the CPU layout, autograd on."""
        with model_mode(self.model, self.model_training), frozen_parameters(self.model), \
                nhwc_weights(self.model, x, self.nhwc_for(x)), torch.enable_grad():
            yield

    def nhwc_for(self, x: torch.Tensor) -> bool:
        """Whether this call runs the model with channels-last weights (CPU image batches, when faster)."""
        return (self.nhwc_on_cpu and x.device.type == "cpu" and x.dim() == 4 and not hasattr(self.model, "_orig_mod")
                and prefers_nhwc(self.model, x, self.needs_input_grad))


class Retirement:
    """When fooled rows leave an iterative attack's batch (`early_stop`).

    On CPU every step: rows are FLOPs, and reading a mask back is free. On a GPU a blocking
    read-back stalls the launch pipeline and each new batch shape makes cuDNN plan again, so
    rows are frozen in place on the device (they stop moving), the count of frozen rows is
    copied to the host without blocking, and the batch is halved (to a power-of-two fraction
    of its first size, keeping a few frozen rows as padding, so shapes repeat and cuDNN's
    plans are reused) when a count that has arrived says at least half of it is frozen.
    """

    def __init__(self, device: torch.device, enabled: bool = True):
        self.enabled = enabled
        self.cuda = torch.device(device).type == "cuda"
        self.min_share = 0.5 if self.cuda else 0.0
        self._host: torch.Tensor | None = None
        self._ready: torch.cuda.Event | None = None

    def due(self, frozen: torch.Tensor) -> bool:
        if not self.cuda:
            return bool(frozen.any())
        if self._ready is not None and self._ready.query():  # last step's count has arrived
            k = int(self._host)
            self._ready = None
            if k > 0 and k >= self.min_share * frozen.numel():
                return True
        if self._ready is None:
            if self._host is None:
                self._host = torch.empty((), dtype=torch.long, pin_memory=True)
            self._host.copy_(frozen.sum(), non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        return False

    def settle(self, frozen: torch.Tensor, current: torch.Tensor, stepped: torch.Tensor) -> torch.Tensor:
        """The next iterate. Frozen rows keep theirs; only a GPU batch holds frozen rows (on CPU they
        have left already), so elsewhere this is the step itself, at no cost."""
        return freeze(frozen, current, stepped) if self.enabled and self.cuda else stepped

    def keep(self, frozen: torch.Tensor) -> torch.Tensor:
        """The rows to keep: all active ones (plus frozen padding up to a repeatable size on GPU)."""
        self._ready = None  # a count in flight refers to the old rows
        keep = ~frozen
        if not self.cuda:
            return keep
        size, active = frozen.numel(), int(keep.sum())
        if active == 0:
            return keep
        target = size
        while target // 2 >= active and target > 1:
            target //= 2
        pad = target - active
        if pad > 0:  # frozen rows that stay (they do not move) so the batch has the bucket's size
            keep[frozen.nonzero().squeeze(1)[:pad]] = True
        return keep


def freeze(frozen: torch.Tensor, current: torch.Tensor, stepped: torch.Tensor) -> torch.Tensor:
    """Frozen rows keep their current iterate, the others take the step."""
    return torch.where(frozen.view(-1, *([1] * (current.dim() - 1))), current, stepped)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project onto the L-inf ball of radius eps around x, intersected with [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project onto the L2 ball of radius eps around x, then clip to [0, 1] (clipping only shrinks the norm)."""
    delta = x_adv - x
    norm = delta.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (x.dim() - 1)))
    scale = torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)
    return (x + delta * scale).clamp_(0.0, 1.0)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def unit_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign for L-inf, grad/||grad||2 for L2."""
    if norm == "linf":
        return grad.sign()
    n = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / n.view(-1, *([1] * (grad.dim() - 1)))
