"""`cnn6`: PCL's CNN-6 for MNIST / F-MNIST (SPEC A1, [P0] Table 1).

Three blocks of [conv 5x5 pad 2 -> PReLU] x2 -> maxpool 2 with widths 32 / 64 / 128
(28 -> 14 -> 7 -> 3, the LeNet++ layout of the center-loss code), then
GAP (128) -> FC 512 -> PReLU -> FC 64 -> PReLU -> FC K.
The FC taps are pre-activation because PCL puts its prototype losses there (SPEC 1.4, A1 [I]);
the PReLUs are separate stages so the heads see the linear outputs.
Taps: block1, block2, block3 (feature maps), gap (128), fc1 (512), act1, fc2 (64), act2, logits.
"""

from torch import nn

from .base import TapNet
from .registry import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 5, padding=2), nn.PReLU(),
        nn.Conv2d(cout, cout, 5, padding=2), nn.PReLU(),
        nn.MaxPool2d(2),
    )


@register_model("cnn6", "PCL's CNN-6 with PReLU (A1), heads on gap/fc1/fc2", min_image_size=8)
def cnn6(in_channels: int, num_classes: int, image_size: int) -> TapNet:
    return TapNet([
        ("block1", _block(in_channels, 32)),
        ("block2", _block(32, 64)),
        ("block3", _block(64, 128)),
        ("gap", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
        ("fc1", nn.Linear(128, 512)),
        ("act1", nn.PReLU()),
        ("fc2", nn.Linear(512, 64)),
        ("act2", nn.PReLU()),
        ("logits", nn.Linear(64, num_classes)),
    ])
