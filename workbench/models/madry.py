"""Madry et al.'s challenge models: `madry_mnist` (SPEC A11) and `madry_resnet` (SPEC A9).

madry_mnist (MadryLab/mnist_challenge): conv 32@5x5 pad 2 -> ReLU -> MP2 -> conv 64@5x5 pad 2 -> ReLU -> MP2
-> FC 1024 -> ReLU -> FC K.
Taps: conv1 (32 maps), conv2 (64 maps), fc1 (1024, after ReLU), logits.

madry_resnet (MadryLab/cifar10_challenge, the "nonwide" model ADR uses on CIFAR):
the input is standardized per image inside the model, followed by conv3x3 16 and three stages of 5
pre-activation residual units (16->16, 16->32 stride 2, 32->64 stride 2). Each unit applies BN and
leaky-ReLU 0.1 before each of its two convs. A shortcut between different shapes is an average pool
with the stride followed by zero-padding of the channels. The head is BN -> leaky-ReLU -> global
average pool (64) -> FC K.
Taps: stem (16 maps), stage1 (16), stage2 (32), stage3 (64), pool (64, ADR's z), logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import PerImageStandardize, TapNet, flat_dim
from .registry import register_model


@register_model("madry_mnist", "Madry's MNIST challenge CNN, 2 conv + 2 FC (A11)", min_image_size=4)
def madry_mnist(in_channels: int, num_classes: int, image_size: int) -> TapNet:
    conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    conv2 = nn.Sequential(nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    flat = flat_dim(nn.Sequential(conv1, conv2), in_channels, image_size)
    return TapNet([
        ("conv1", conv1),
        ("conv2", conv2),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 1024), nn.ReLU())),
        ("logits", nn.Linear(1024, num_classes)),
    ])


_SLOPE = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF batch_norm defaults of the reference: decay 0.9 (= momentum 0.1), epsilon 1e-3.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


class _PreActUnit(nn.Module):
    """Madry's `_residual`: BN -> lReLU -> conv(stride) -> BN -> lReLU -> conv, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool):
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.bn1 = _bn(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.stride = stride
        self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(x), _SLOPE)
        shortcut = h if self.activate_before_residual else x
        h = self.conv1(h)
        h = self.conv2(F.leaky_relu(self.bn2(h), _SLOPE))
        if self.pad:
            if self.stride > 1:
                # ceil_mode keeps the shortcut the size of the padded strided conv on odd inputs
                shortcut = F.avg_pool2d(shortcut, self.stride, self.stride, ceil_mode=True)
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return h + shortcut


def _stage(cin: int, cout: int, stride: int, units: int, activate_before_residual: bool) -> nn.Sequential:
    layers = [_PreActUnit(cin, cout, stride, activate_before_residual)]
    layers += [_PreActUnit(cout, cout, 1, False) for _ in range(units - 1)]
    return nn.Sequential(*layers)


@register_model("madry_resnet", "Madry's CIFAR-10 pre-activation ResNet, nonwide (A9)", min_image_size=8)
def madry_resnet(in_channels: int, num_classes: int, image_size: int) -> TapNet:
    filters = [16, 16, 32, 64]
    units = 5
    pool = nn.Sequential(_bn(filters[3]), nn.LeakyReLU(_SLOPE), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    logits = nn.Linear(filters[3], num_classes)
    net = TapNet(
        [
            ("stem", nn.Conv2d(in_channels, filters[0], 3, padding=1, bias=False)),
            ("stage1", _stage(filters[0], filters[1], 1, units, True)),
            ("stage2", _stage(filters[1], filters[2], 2, units, False)),
            ("stage3", _stage(filters[2], filters[3], 2, units, False)),
            ("pool", pool),
            ("logits", logits),
        ],
        input_transform=PerImageStandardize(),
    )
    # Initialization of the reference: convs N(0, 2 / (k*k*out)), FC uniform unit scaling, zero bias.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    bound = (3.0 / filters[3]) ** 0.5
    nn.init.uniform_(logits.weight, -bound, bound)
    nn.init.zeros_(logits.bias)
    return net
