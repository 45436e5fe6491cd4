"""`wrn34_10`: WideResNet-34-10 as in TRADES (the standard CIFAR adversarial-training backbone).

depth 34, widen 10: (depth - 4) / 6 = 5 pre-activation basic blocks per stage, widths 16 / 160 / 320 / 640,
strides 1 / 2 / 2. A block is BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> (dropout) -> conv3x3;
where the shape changes, the shortcut is a 1x1 conv applied to the activated input.
Head: BN -> ReLU -> global average pool (640) -> FC K. TRADES pools with a fixed 8x8 window,
which equals the global pool on 32x32 inputs. TRADES also defines a block it never uses, which is left out here.
Taps: stem (16 maps), layer1 (160), layer2 (320), layer3 (640), pool (640-d), logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WorkbenchError
from .base import TapNet
from .registry import register_model


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(h)
        h = F.relu(self.bn2(self.conv1(h)))
        if self.dropout > 0:
            h = F.dropout(h, p=self.dropout, training=self.training)
        return self.conv2(h) + shortcut


@register_model("wrn34_10", "WideResNet-34-10 as in TRADES", min_image_size=8, limits={"depth": 604, "widen": 64})
def wrn34_10(
    in_channels: int, num_classes: int, image_size: int, depth: int = 34, widen: int = 10, dropout: float = 0.0
) -> TapNet:
    if depth < 10 or (depth - 4) % 6 != 0:
        raise WorkbenchError(f"WideResNet depth must be 6n+4 with n >= 1 (got {depth})")
    if widen < 1:
        raise WorkbenchError(f"WideResNet widen must be at least 1 (got {widen})")
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    stages = []
    for i, stride in enumerate([1, 2, 2]):
        cin, cout = widths[i], widths[i + 1]
        blocks = [_WideBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, dropout) for j in range(n)]
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    logits = nn.Linear(widths[3], num_classes)
    net = TapNet([
        ("stem", nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)),
        *stages,
        ("pool", nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())),
        ("logits", logits),
    ])
    # Initialization of the TRADES code: He-normal convs (fan-out), zero FC bias.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(logits.bias)
    return net
