"""`cnn3`: the 3-conv substitute model of PC-LC's black-box experiments (SPEC A5, [P2]).

conv 16@5x5 -> ReLU -> conv 32@5x5 -> ReLU -> MP2 -> conv 64@5x5 -> ReLU -> MP2 -> FC 100 -> ReLU -> FC K,
no padding (28 -> 24 -> 20 -> 10 -> 6 -> 3, so 64*3*3 = 576 features on MNIST).
Taps: block1 (32 maps), block2 (64 maps), fc1 (100, after ReLU), logits.
"""

from torch import nn

from .base import TapNet, flat_dim
from .registry import register_model


@register_model("cnn3", "3 conv + 2 FC (A5, PC-LC's black-box substitute)", min_image_size=20)
def cnn3(in_channels: int, num_classes: int, image_size: int) -> TapNet:
    block1 = nn.Sequential(
        nn.Conv2d(in_channels, 16, 5), nn.ReLU(),
        nn.Conv2d(16, 32, 5), nn.ReLU(),
        nn.MaxPool2d(2),
    )
    block2 = nn.Sequential(nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2))
    flat = flat_dim(nn.Sequential(block1, block2), in_channels, image_size)
    return TapNet([
        ("block1", block1),
        ("block2", block2),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 100), nn.ReLU())),
        ("logits", nn.Linear(100, num_classes)),
    ])
