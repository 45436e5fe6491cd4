"""VGG family: `vgg11` (SPEC A10, CCN's CIFAR net), `vgg13` (A6, PC-LC's colour net), `vgg19` (A3, VGG-19-BN).

All convs are 3x3 pad 1 followed by ReLU (with BN in between where enabled); "M" is maxpool 2.
vgg11: [64, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] (CCN Table 10: four pools, not the five of
standard VGG-11), no BN unless batch_norm=True, then FC 512 -> ReLU -> FC 512 -> ReLU -> FC K.
vgg13: [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] with BN,
then Dropout -> FC 512 -> ReLU -> FC K (the layout of PC-LC's models/vgg.py).
vgg19: standard VGG-19-BN cfg, with the same classifier as vgg13.
The first FC layer takes the flattened conv output, so larger images give more inputs to it.
Taps: block1..block4 (vgg11) or block1..block5 (one per pool), then
fc1, fc2, logits (vgg11) or feature (512, after ReLU: PC-LC's feature), logits (vgg13, vgg19).
"""

from __future__ import annotations

from torch import nn

from .base import TapNet, flat_dim
from .registry import register_model

M = "M"
_CFG = {
    "vgg11": [64, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg19": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}


def _blocks(cfg: list, in_channels: int, batch_norm: bool) -> list[tuple[str, nn.Module]]:
    """One stage per maxpool, named block1, block2, ...; each ends with its pool."""
    stages: list[tuple[str, nn.Module]] = []
    layers: list[nn.Module] = []
    cin = in_channels
    for v in cfg:
        if v == M:
            layers.append(nn.MaxPool2d(2))
            stages.append((f"block{len(stages) + 1}", nn.Sequential(*layers)))
            layers = []
        else:
            layers.append(nn.Conv2d(cin, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU())
            cin = v
    assert not layers, "a VGG cfg must end with a pool"
    return stages


def _vgg(name: str, in_channels: int, num_classes: int, image_size: int, batch_norm: bool,
         fc_layers: int, dropout: float) -> TapNet:
    blocks = _blocks(_CFG[name], in_channels, batch_norm)
    flat = flat_dim(nn.Sequential(*(m for _, m in blocks)), in_channels, image_size)
    if fc_layers == 2:  # vgg11 (CCN): two hidden FC layers, no dropout
        head = [
            ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(flat, 512), nn.ReLU())),
            ("fc2", nn.Sequential(nn.Linear(512, 512), nn.ReLU())),
        ]
    else:  # vgg13/vgg19 (PC-LC): one hidden FC layer behind dropout
        head = [("feature", nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 512), nn.ReLU()))]
    return TapNet(blocks + head + [("logits", nn.Linear(512, num_classes))])


@register_model("vgg11", "VGG-11, CCN's 4-pool CIFAR variant (A10)", min_image_size=16)
def vgg11(in_channels: int, num_classes: int, image_size: int, batch_norm: bool = False) -> TapNet:
    return _vgg("vgg11", in_channels, num_classes, image_size, batch_norm, fc_layers=2, dropout=0.0)


@register_model("vgg13", "VGG-13-BN with a 512-d feature layer (A6, PC-LC colour)", min_image_size=32)
def vgg13(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.5) -> TapNet:
    return _vgg("vgg13", in_channels, num_classes, image_size, True, fc_layers=1, dropout=dropout)


@register_model("vgg19", "VGG-19-BN with a 512-d feature layer (A3, PCL black-box source)", min_image_size=32)
def vgg19(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.5) -> TapNet:
    return _vgg("vgg19", in_channels, num_classes, image_size, True, fc_layers=1, dropout=dropout)
