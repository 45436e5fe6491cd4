"""Model registry: `@register_model` fills it, `create_model` builds from it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from ..errors import WorkbenchError
from ..registry import Registry
from .base import Normalize, TapNet


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., TapNet]
    description: str
    min_image_size: int = 1
    channels: tuple[int, ...] = (1, 3)
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # largest value of an int option (else MAX_INT_OPTION)

    def fits(self, in_channels: int, image_size: int) -> bool:
        return in_channels in self.channels and image_size >= self.min_image_size


MODELS: Registry[ModelSpec] = Registry("model")

# Every integer option sizes something (a width, a depth, blocks per stage). Past this, even a meta-device
# build of the Python module tree takes minutes; no model of the papers comes near it.
MAX_INT_OPTION = 4096
# Weights of a model and its auxiliary heads together (elements; 4 GB in float32). wrn34_10 has 46M.
MAX_PARAMETERS = 1_000_000_000


def register_model(name: str, description: str, *, min_image_size: int = 1, channels=(1, 3),
                   limits: dict[str, int] | None = None):
    """Decorator registering a builder `fn(in_channels, num_classes, image_size, **kwargs) -> TapNet`.
    `limits` caps int options that multiply modules (blocks, depth) below MAX_INT_OPTION."""

    def add(fn: Callable[..., TapNet]) -> Callable[..., TapNet]:
        params = inspect.signature(fn).parameters
        defaults = {
            k: p.default
            for k, p in params.items()
            if p.default is not inspect.Parameter.empty and k not in ("in_channels", "num_classes", "image_size")
        }
        MODELS.register(
            name,
            ModelSpec(name, fn, description, min_image_size, tuple(channels), defaults, dict(limits or {})),
        )
        return fn

    return add


def create_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    **kwargs: Any,
) -> TapNet:
    """Build a registered model for inputs of shape (in_channels, image_size, image_size) in [0, 1].

    `normalize=(mean, std)` installs per-channel normalization as the model's first step.
    Keyword arguments set to None are dropped so CLI defaults never override model defaults.
    """
    spec = MODELS.get(name)
    if not spec.fits(in_channels, image_size):
        raise WorkbenchError(
            f"model {name!r} needs {'/'.join(map(str, spec.channels))}-channel images of at least "
            f"{spec.min_image_size}x{spec.min_image_size} (got {in_channels} channels, {image_size}x{image_size})"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unknown = set(kwargs) - set(spec.defaults)
    if unknown:
        known = ", ".join(sorted(spec.defaults)) or "none"
        raise WorkbenchError(f"model {name!r} has no option {sorted(unknown)[0]!r} (options: {known})")
    for key, value in kwargs.items():
        top = spec.limits.get(key, MAX_INT_OPTION)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= top:
            raise WorkbenchError(f"model {name!r} option {key}={value} is out of range (0..{top})")
    model = spec.builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
    if normalize is not None:
        mean, std = normalize
        if len(mean) != in_channels or len(std) != in_channels:
            raise WorkbenchError(f"normalization needs {in_channels} means and stds, got {len(mean)}/{len(std)}")
        model.normalize = Normalize(mean, std)
    return model


def model_taps(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "taps", ()))


def check_parameter_budget(*modules: nn.Module | None, what: str = "the model") -> int:
    """Count weights without touching them (works on the meta device); refuse more than MAX_PARAMETERS."""
    total = sum(t.numel() for m in modules if m is not None for t in [*m.parameters(), *m.buffers()])
    if total > MAX_PARAMETERS:
        raise WorkbenchError(f"{what} would have {total:,} weights, more than the {MAX_PARAMETERS:,} this "
                             "workbench builds")
    return total
