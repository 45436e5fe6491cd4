"""Speed options shared by training and evaluation: mixed precision, channels-last, torch.compile, cuDNN autotuning.

Each option changes how the model runs, never what the run computes: inputs, perturbations,
projections, losses and optimizer state stay in float32; only the model's forward runs under
autocast (and its logits are handed back in float32).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from .errors import WorkbenchError

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def resolve_amp(name: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `name` on `device`: auto is bf16 on CUDA and off (float32) on the CPU."""
    device = torch.device(device)
    if name not in AMP_CHOICES:
        raise WorkbenchError(f"unknown amp {name!r}; use {' | '.join(AMP_CHOICES)}")
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    dtype = _DTYPES[name]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise WorkbenchError("amp bf16 needs a GPU with bfloat16 support (Ampere or newer); use fp16 or off")
    return dtype


def amp_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off")


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to `dtype` on `device`'s type; a no-op for float32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch in NHWC memory layout (same values, same shape); other tensors as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def compile_model(model: nn.Module, mode: str = "default") -> nn.Module:
    """torch.compile'd view of `model` sharing its parameters (state_dict keys gain `_orig_mod.`: save the
    original). Dynamic shapes are left to torch: a second batch size marks the batch dimension dynamic."""
    if mode not in COMPILE_MODES:
        raise WorkbenchError(f"unknown compile mode {mode!r}; use {' | '.join(COMPILE_MODES)}")
    return torch.compile(model, mode=None if mode == "default" else mode)


def set_cudnn_benchmark(enabled: bool) -> None:
    """Let cuDNN time its convolution algorithms per input shape (a GPU-only setting)."""
    torch.backends.cudnn.benchmark = bool(enabled)


@dataclass(frozen=True)
class Precision:
    """How a model is run for an attack or an evaluation: the autocast dtype and the input layout."""

    amp: torch.dtype | None = None
    channels_last: bool = False

    def forward(self, model: nn.Module, x: torch.Tensor, **kwargs):
        """model(x) under this precision; float outputs come back in float32."""
        if self.channels_last:
            x = channels_last(x)
        if self.amp is None:
            return model(x, **kwargs)
        with autocast(x.device, self.amp):
            out = model(x, **kwargs)
        return to_float32(out)


FLOAT32 = Precision()


def to_float32(out):
    """Cast the floating tensors of a model output (a tensor, or a tuple/list/dict of them) to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(to_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: to_float32(v) for k, v in out.items()}
    return out
