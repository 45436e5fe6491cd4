"""The shape every model of the zoo shares: named stages whose outputs are taps.

A model is an ordered list of named stages. `model(x)` returns logits;
`model(x, taps=["fc1"])` returns `(logits, {"fc1": tensor})`, so a defense can attach
losses or auxiliary heads to intermediate features by name without editing the model.
Inputs are always pixels in [0, 1]; any normalization is the first module of the model,
so an attack's eps is in pixel units.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as part of the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class PerImageStandardize(nn.Module):
    """Per-image standardization (TensorFlow's `per_image_standardization`), as Madry's CIFAR model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1, unbiased=False).view(-1, 1, 1, 1)
        floor = 1.0 / (flat.shape[1] ** 0.5)
        return (x - mean) / torch.clamp(std, min=floor)


class TapNet(nn.Module):
    """A classifier made of named stages; every stage output is a tap."""

    def __init__(self, stages: Iterable[tuple[str, nn.Module]], input_transform: nn.Module | None = None):
        super().__init__()
        # `input_transform` is part of the architecture (e.g. Madry's per-image standardization);
        # `normalize` is the dataset normalization that create_model may install.
        self.input_transform = input_transform if input_transform is not None else nn.Identity()
        self.normalize: nn.Module = nn.Identity()
        self.stages = nn.ModuleDict(list(stages))

    @property
    def taps(self) -> tuple[str, ...]:
        """Names of the intermediate features this model exposes, input to output."""
        return tuple(self.stages.keys())

    def _check(self, taps: Iterable[str]) -> set[str]:
        wanted = set(taps)
        unknown = wanted - set(self.stages.keys())
        if unknown:
            raise KeyError(f"unknown taps {sorted(unknown)}; this model has {list(self.taps)}")
        return wanted

    def forward(self, x: torch.Tensor, taps: Sequence[str] | None = None):
        x = self.input_transform(self.normalize(x))
        if taps is None:
            for stage in self.stages.values():
                x = stage(x)
            return x
        wanted = self._check(taps)
        features: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in wanted:
                features[name] = x
        return x, features

    def features(self, x: torch.Tensor, tap: str) -> torch.Tensor:
        """The output of stage `tap`, stopping there (the 'generator' half of the network)."""
        self._check([tap])
        x = self.input_transform(self.normalize(x))
        for name, stage in self.stages.items():
            x = stage(x)
            if name == tap:
                return x
        raise AssertionError("unreachable")

    def head(self, z: torch.Tensor, tap: str) -> torch.Tensor:
        """Run the stages after `tap` on its output `z` (the 'classifier' half)."""
        self._check([tap])
        names = list(self.stages.keys())
        for name in names[names.index(tap) + 1 :]:
            z = self.stages[name](z)
        return z


def flat_dim(body: nn.Module, in_channels: int, image_size: int) -> int:
    """Number of features `body` produces for one image, found with a dry run."""
    with torch.no_grad():
        out = body(torch.zeros(1, in_channels, image_size, image_size))
    return int(out.flatten(1).shape[1])


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1
