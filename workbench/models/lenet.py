"""`lenet5`: LeNet-5 as used by PC-LC for MNIST / F-MNIST / K-MNIST (SPEC A4, [P2]).

conv 6@5x5 pad 2 -> ReLU -> MP2 -> conv 16@5x5 -> ReLU -> MP2 -> FC 120 -> ReLU -> FC 84 -> ReLU -> FC K.
The flattened size is 16*5*5 = 400 on 28x28 inputs and 16*6*6 = 576 on 32x32.
Taps: conv1 (6 maps), conv2 (16 maps), fc1 (120), feature (84, after ReLU: PC-LC's feature), logits.
"""

from torch import nn

from .base import TapNet, flat_dim
from .registry import register_model


@register_model("lenet5", "LeNet-5 (A4, PC-LC's MNIST-family model)", min_image_size=12)
def lenet5(in_channels: int, num_classes: int, image_size: int) -> TapNet:
    conv1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    flat = flat_dim(nn.Sequential(conv1, conv2), in_channels, image_size)
    return TapNet([
        ("conv1", conv1),
        ("conv2", conv2),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 120), nn.ReLU())),
        ("feature", nn.Sequential(nn.Linear(120, 84), nn.ReLU())),
        ("logits", nn.Linear(84, num_classes)),
    ])
