"""CIFAR ResNets: `resnet56` (SPEC A6, the GCE comparison) and `resnet110` (SPEC A2, PCL's CIFAR model).

Both: conv3x3 16 -> BN -> ReLU, three stages at widths 16 / 32 / 64 (stride 1 / 2 / 2), global average pool.
resnet56: BasicBlocks (two 3x3 conv + BN), n = 9 per stage (6n+2 = 56 layers); option-A shortcuts
(strided subsampling plus zero channel padding, so no shortcut parameters); GAP (64) -> FC K.
resnet110: bottleneck blocks (1x1, 3x3, 1x1 conv, expansion 4, so the stages output 64 / 128 / 256);
a 1x1 conv + BN shortcut where shapes differ; GAP (256) -> FC 1024 (linear, no activation) -> FC K.
blocks_per_stage=12 gives the paper's 9n+2 = 110 layers; the PCL authors' code (resnet_model.py with
depth=110) actually builds 18 bottlenecks per stage, so pass blocks_per_stage=18 to match the code.
Convs use He-normal init N(0, 2 / (k*k*out)) as the PCL code does.
Taps: stem, layer1, layer2, layer3 (feature maps), gap (vector), fc1 (1024, resnet110 only), logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import TapNet
from .registry import register_model


class _BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + option-A shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.stride > 1:
            shortcut = shortcut[:, :, :: self.stride, :: self.stride]
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class _Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 (x4 channels), each with BN; projection shortcut where shapes differ."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _stem(in_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())


def _he_init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _gap() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


@register_model("resnet56", "CIFAR ResNet-56, basic blocks, option-A shortcuts (A6, GCE comparison)", min_image_size=8,
                limits={"blocks_per_stage": 200})
def resnet56(in_channels: int, num_classes: int, image_size: int, blocks_per_stage: int = 9) -> TapNet:
    stages = []
    cin = 16
    for i, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        blocks = [_BasicBlock(cin, width, stride)] + [_BasicBlock(width, width, 1) for _ in range(blocks_per_stage - 1)]
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        cin = width
    net = TapNet([("stem", _stem(in_channels)), *stages, ("gap", _gap()), ("logits", nn.Linear(64, num_classes))])
    _he_init(net)
    return net


@register_model("resnet110", "CIFAR ResNet-110, bottlenecks, GAP 256 -> FC 1024 -> FC K (A2, PCL)", min_image_size=8,
                limits={"blocks_per_stage": 200})
def resnet110(in_channels: int, num_classes: int, image_size: int, blocks_per_stage: int = 12) -> TapNet:
    stages = []
    cin = 16
    for i, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        blocks = []
        for j in range(blocks_per_stage):
            blocks.append(_Bottleneck(cin, planes, stride if j == 0 else 1))
            cin = planes * _Bottleneck.expansion
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    net = TapNet([
        ("stem", _stem(in_channels)),
        *stages,
        ("gap", _gap()),
        ("fc1", nn.Linear(cin, 1024)),
        ("logits", nn.Linear(1024, num_classes)),
    ])
    _he_init(net)
    return net
