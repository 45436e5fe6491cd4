"""`small_cnn`: the 4-conv 3-FC net of Papernot'16 / Carlini-Wagner / TRADES / ADR / CCN (SPEC A7, A8).

width=32 (default): conv 32-32-pool-64-64-pool, FC 200-200-K, the MNIST net.
width=64: conv 64-64-pool-128-128-pool, FC 256-256-K, ADR's CIFAR "CNN-4C3F(64)".
Taps: features (flattened conv output, ADR's z), fc1, fc2, logits.

feature_norm (default "none", the papers' net): "batch" or "layer" normalises the last conv's output
before its ReLU and pool, as the TF ResNet of ADR does before its z (BN, ReLU, pool). z stays post-ReLU,
so ADR's distances and the dead-ReLU fraction mean what they mean without the norm, but its scale no
longer follows the conv weights (issue 19: the ADR terms grew or killed z on the plain net).
"""

from typing import Literal, get_args

from torch import nn

from ..errors import WorkbenchError

from .base import TapNet, flat_dim
from .registry import register_model

FeatureNorm = Literal["none", "batch", "layer"]


def feature_norm_layers(kind: FeatureNorm, channels: int) -> list[nn.Module]:
    if kind not in get_args(FeatureNorm):
        raise WorkbenchError(f"feature_norm {kind!r}: choose one of {', '.join(get_args(FeatureNorm))}")
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        return [nn.GroupNorm(1, channels)]  # LayerNorm over (C, H, W) of each image, per-channel affine
    return []


@register_model("small_cnn", "4 conv + 3 FC (A7 MNIST; width=64 gives A8 for CIFAR)", min_image_size=16)
def small_cnn(
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int = 32,
    fc_width: int | None = None,
    dropout: float = 0.5,
    feature_norm: FeatureNorm = "none",
) -> TapNet:
    fc_width = fc_width or (200 if width <= 32 else 256)
    w1, w2 = width, 2 * width
    conv = nn.Sequential(
        nn.Conv2d(in_channels, w1, 3), nn.ReLU(),
        nn.Conv2d(w1, w1, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w1, w2, 3), nn.ReLU(),
        nn.Conv2d(w2, w2, 3), *feature_norm_layers(feature_norm, w2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    logits = nn.Linear(fc_width, num_classes)
    # Initialization of the TRADES/ADR reference code: Kaiming-normal convs, zero last layer.
    for m in conv.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    nn.init.zeros_(logits.weight)
    nn.init.zeros_(logits.bias)
    return TapNet([
        ("features", conv),
        ("fc1", nn.Sequential(nn.Linear(flat_dim(conv, in_channels, image_size), fc_width), nn.ReLU(), nn.Dropout(dropout))),
        ("fc2", nn.Sequential(nn.Linear(fc_width, fc_width), nn.ReLU())),
        ("logits", logits),
    ])
