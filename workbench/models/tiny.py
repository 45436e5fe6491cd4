"""`tiny`: a very small CNN for tests and the offline quickstart."""

from torch import nn

from .base import TapNet, flat_dim
from .registry import register_model


@register_model("tiny", "two-conv toy CNN for tests and the digits quickstart", min_image_size=4)
def tiny(in_channels: int, num_classes: int, image_size: int, width: int = 16, hidden: int = 64) -> TapNet:
    conv = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
    )
    return TapNet([
        ("features", conv),
        ("fc1", nn.Sequential(nn.Linear(flat_dim(conv, in_channels, image_size), hidden), nn.ReLU())),
        ("logits", nn.Linear(hidden, num_classes)),
    ])
