"""The profile schema: every key a profile may set, its type and its default.

Profiles are validated strictly (unknown keys and wrong types are errors); the
resolved config of a run is this model dumped back to YAML.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# Counts (steps, epochs, subsets) fit a C int: past that torch and the data loader fail deep inside,
# and no real run needs more.
MAX_COUNT = 2**31 - 1
MAX_BATCH = 2**20
MAX_SEED = 2**32 - 1  # numpy's range; offsets (per rank, per step) are added to it within torch's 64 bits
MAX_PIXEL_EPS = 1.0  # pixels live in [0, 1]: an L-inf radius of 1 already allows any image

PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# A step size is a pixel value, or an expression of eps (and steps): "eps/4", "2.5*eps/steps".
_STEP_RE = re.compile(r"^\s*(?:(?P<k>\d*\.?\d+(?:e-?\d+)?)\s*\*\s*)?eps\s*(?:/\s*(?P<d>\d*\.?\d+|steps))?\s*$")


def resolve_step_size(step_size: float | str, eps: float, steps: int) -> float:
    """The step size in pixels for a given eps and number of steps."""
    if isinstance(step_size, (int, float)):
        return float(step_size)
    m = _STEP_RE.match(step_size)
    assert m is not None, "validated by the schema"
    k = float(m["k"]) if m["k"] else 1.0
    d = m["d"]
    div = float(steps) if d == "steps" else (float(d) if d else 1.0)
    return k * eps / div


def _check_step_size(v: Any) -> Any:
    if isinstance(v, str):
        m = _STEP_RE.match(v)
        if not m:
            raise ValueError("must be a number or an expression like 'eps/4' or '2.5*eps/steps'")
        if (m["k"] and float(m["k"]) <= 0) or (m["d"] and m["d"] != "steps" and float(m["d"]) <= 0):
            raise ValueError("must be a positive multiple of eps (no zero factor or divisor)")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a positive number")
    return v


class NamedBlock(Strict):
    """A block that may be written as just its name: `model: small_cnn` == `model: {name: small_cnn}`."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class ModelConfig(NamedBlock):
    name: str
    # "none": the model sees [0, 1] pixels; "dataset": the dataset's mean/std, inside the model;
    # or explicit [mean..., std...] as {mean: [...], std: [...]}.
    normalize: Union[Literal["none", "dataset"], dict[str, list[float]]] = "none"
    options: dict[str, Any] = Field(default_factory=dict, description="model builder options, e.g. width")


class DefenseConfig(NamedBlock):
    name: str = "softmax"
    params: dict[str, Any] = Field(default_factory=dict, description="the defense's hyperparameters")


class AdvTrainConfig(Strict):
    attack: Literal["none", "fgsm", "pgd"] = "none"
    eps: Union[float, list[float]] = Field(0.3, description="pixel eps, or [lo, hi] sampled uniformly")
    eps_sampling: Literal["batch", "sample"] = "batch"
    steps: PositiveInt = 10
    step_size: Union[float, str] = "2.5*eps/steps"
    random_start: bool = True
    # split: the first ratio*B samples of a batch are replaced by their adversarial versions.
    # concat: adversarial copies are appended to the clean batch (the PCL / PC-LC 1:1 recipe).
    pairing: Literal["split", "concat"] = "split"
    ratio: Fraction = Field(1.0, validate_default=True,
                            description="share of adversarial samples in the training batch (1: all, 0.5: 1:1)")
    model_mode: Literal["eval", "train"] = "eval"
    loss: Literal["ce", "cw"] = "ce"
    # all: every epoch; last_phase: only in the defense's final phase (PCL's Algorithm 1 augments with
    # adversarial examples after the CE warm-up, not during it).
    phases: Literal["all", "last_phase"] = "all"
    # An adversarial epoch costs about steps + 1 passes per sample: a short budget can give its adversarial
    # epochs fewer samples than its clean warm-up (which then converges on the whole set).
    train_subset: Union[PositiveInt, None] = Field(
        None, description="adversarial epochs train on only the first N samples (clean epochs on all)")

    _step = field_validator("step_size")(classmethod(lambda cls, v: _check_step_size(v)))

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: Any) -> Any:
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list) and (len(v) != 2 or v[0] > v[1]):
            raise ValueError("a range must be [lo, hi] with lo <= hi")
        if any(not (math.isfinite(e) and 0 <= e <= MAX_PIXEL_EPS) for e in values):
            raise ValueError(f"must be a pixel radius in [0, {MAX_PIXEL_EPS:g}] (images are in [0, 1])")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float, info: ValidationInfo) -> float:
        if info.data.get("attack") != "none" and info.data.get("pairing") == "concat" and not (0 < v <= 0.5):
            raise ValueError("pairing 'concat' appends at most one adversarial copy per sample: ratio must be in (0, 0.5]")
        return v

    @property
    def enabled(self) -> bool:
        return self.attack != "none" and self.ratio > 0


class SGDConfig(Strict):
    name: Literal["sgd"]
    lr: Annotated[float, Field(gt=0)] = 0.1
    momentum: Annotated[float, Field(ge=0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    nesterov: bool = False


class AdamConfig(Strict):
    name: Literal["adam", "adamw"]
    lr: Annotated[float, Field(gt=0)] = 1e-3
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(default_factory=lambda: [0.9, 0.999],
                                                                min_length=2, max_length=2)
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


OptimizerConfig = Annotated[Union[SGDConfig, AdamConfig], Field(discriminator="name")]


class ScheduleConfig(NamedBlock):
    # constant | multistep (milestones in epochs, gamma) | cosine (to 0 over the run) |
    # onecycle (linear warm-up for warmup_epochs, then linear decay to 0)
    name: Literal["constant", "multistep", "cosine", "onecycle"] = "constant"
    milestones: list[NonNegInt] = Field(default_factory=list)
    gamma: Annotated[float, Field(gt=0)] = 0.1
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    # Restart the schedule at every phase of the defense (e.g. PC-LC's CE warm-up, then PC-LC): each phase
    # gets the whole schedule, with milestones counted from the phase's first epoch.
    per_phase: bool = False


class EvalConfig(Strict):
    clean_every: NonNegInt = Field(1, description="test clean accuracy every N epochs (0: never)")
    clean_subset: Union[PositiveInt, None] = Field(None, description="test samples for clean accuracy (null: all)")
    robust_every: NonNegInt = Field(1, description="robust accuracy every N epochs (0: never)")
    robust_subset: PositiveInt = 500
    attack: Literal["pgd", "fgsm"] = "pgd"
    eps: Annotated[float, Field(gt=0, le=MAX_PIXEL_EPS)] = 0.3
    steps: PositiveInt = 20
    step_size: Union[float, str] = "2.5*eps/steps"
    restarts: PositiveInt = 1
    batch_size: BatchSize = 500
    best_by: Literal["auto", "clean", "robust"] = "auto"

    _step = field_validator("step_size")(classmethod(lambda cls, v: _check_step_size(v)))


class DataConfig(Strict):
    augment: Literal["auto", "none", "crop_flip", "crop"] = "auto"
    train_subset: Union[PositiveInt, None] = Field(None, description="use only the first N training samples")


class PerformanceConfig(Strict):
    """How fast the run goes, never what it computes (each option is tested to agree with float32 eager)."""

    # auto: bf16 on CUDA, off (float32) on the CPU. Only the model's forward is autocast: inputs, perturbations,
    # projections, losses and optimizer state stay float32. fp16 adds a gradient scaler.
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = Field(False, description="NHWC memory layout for the model and its inputs")
    compile: Union[bool, Literal["default", "reduce-overhead", "max-autotune"]] = Field(
        False, description="torch.compile the model (training, adversarial examples and evaluation)")
    cudnn_benchmark: bool = Field(True, description="let cuDNN time its algorithms per shape (CUDA only)")

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    @property
    def compile_mode(self) -> str | None:
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile


class DistributedConfig(Strict):
    """Used when `workbench train --devices N` runs the profile on N processes (DDP)."""

    # auto: SyncBatchNorm on CUDA (batch statistics over the global batch, as one process would compute them);
    # on the CPU (gloo) PyTorch has no SyncBatchNorm, so each rank normalises with its local batch.
    sync_batchnorm: Union[bool, Literal["auto"]] = "auto"
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on CUDA, gloo on the CPU")


class RunConfig(Strict):
    """A fully resolved training run."""

    name: Union[str, None] = Field(None, description="run name prefix (default: the profile's file name)")
    description: str = ""
    dataset: str
    model: ModelConfig
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    adv_train: AdvTrainConfig = Field(default_factory=AdvTrainConfig)
    optimizer: OptimizerConfig = Field(default_factory=lambda: SGDConfig(name="sgd"))
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: PositiveInt = 10
    batch_size: BatchSize = 128
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    log_every: PositiveInt = Field(20, description="write a step metric every N steps")
    checkpoint_every: NonNegInt = Field(0, description="also checkpoint every N steps mid-epoch (0: epoch ends only)")
    grad_clip: Union[Annotated[float, Field(gt=0)], None] = None
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @model_validator(mode="before")
    @classmethod
    def _model_options(cls, data: Any) -> Any:
        # Model options may be written inline: `model: {name: small_cnn, width: 64}`.
        if isinstance(data, dict):
            for key, known in (("model", {"name", "normalize", "options"}), ("defense", {"name", "params"})):
                block = data.get(key)
                if isinstance(block, dict):
                    target = "options" if key == "model" else "params"
                    extra = {k: v for k, v in block.items() if k not in known}
                    inner = block.get(target) or {}
                    if extra and isinstance(inner, dict):  # else validation names the bad block
                        block = {k: v for k, v in block.items() if k in known}
                        block[target] = {**inner, **extra}
                        data = {**data, key: block}
        return data
