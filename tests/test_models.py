"""Every registered model: shapes, gradients, taps, the features/head split, errors, parameter counts."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError
from workbench.models import MODELS, create_model

K = 7  # not 10, so a hard-coded class count shows up
NAMES = MODELS.names()
# Options that make the deep models cheap where only the layout matters, not the depth.
CHEAP = {
    "wrn34_10": {"depth": 10, "widen": 1},
    "resnet110": {"blocks_per_stage": 1},
    "resnet56": {"blocks_per_stage": 1},
}


def shape_for(name: str) -> tuple[int, int]:
    """MNIST's 1x28x28 where the model fits it, else CIFAR's 3x32x32."""
    return (1, 28) if MODELS.get(name).fits(1, 28) else (3, 32)


@functools.lru_cache(maxsize=None)
def built(name: str):
    torch.manual_seed(0)
    c, s = shape_for(name)
    return create_model(name, c, K, s), torch.rand(2, c, s, s)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_train_step(name):
    model, x = built(name)
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    assert logits.shape == (2, K)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, K - 1])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_taps_and_split(name):
    model, x = built(name)
    model.eval()
    taps = list(model.taps)
    assert taps[-1] == "logits" and len(set(taps)) == len(taps)
    with torch.no_grad():
        plain = model(x)
        logits, feats = model(x, taps=taps)
        assert set(feats) == set(taps)
        assert torch.equal(feats["logits"], logits)
        torch.testing.assert_close(logits, plain)
        for tap in taps:
            z = feats[tap]
            assert z.shape[0] == 2 and torch.isfinite(z).all(), tap
            torch.testing.assert_close(model.features(x, tap), z)
            torch.testing.assert_close(model.head(z, tap), plain)
        _, only = model(x, taps=[taps[0]])
        assert list(only) == [taps[0]]


@pytest.mark.parametrize("name", NAMES)
def test_unknown_tap_raises(name):
    model, x = built(name)
    with pytest.raises(KeyError):
        model(x, taps=["no_such_tap"])
    with pytest.raises(KeyError):
        model.features(x, "no_such_tap")
    with pytest.raises(KeyError):
        model.head(x, "no_such_tap")


@pytest.mark.parametrize("name", NAMES)
def test_create_model_rejects_bad_input(name):
    spec = MODELS.get(name)
    c = spec.channels[0]
    with pytest.raises(WorkbenchError):
        create_model(name, c, K, spec.min_image_size - 1)
    with pytest.raises(WorkbenchError):
        create_model(name, 2, K, 32)
    with pytest.raises(WorkbenchError):
        create_model(name, c, K, max(spec.min_image_size, 32), no_such_option=1)


@pytest.mark.parametrize("name", NAMES)
def test_smallest_allowed_image(name):
    spec = MODELS.get(name)
    for s in (spec.min_image_size, spec.min_image_size + 1):  # also an odd/even neighbour
        model = create_model(name, 3, K, s, **CHEAP.get(name, {})).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, s, s)).shape == (1, K)


# Tap widths the defenses rely on (PCL heads, ADR's z, PC-LC's feature).
TAP_DIMS = {
    "cnn6": {"gap": 128, "fc1": 512, "fc2": 64},
    "resnet110": {"gap": 256, "fc1": 1024},
    "madry_resnet": {"pool": 64},
    "lenet5": {"feature": 84},
    "small_cnn": {"features": 1024},
}


@pytest.mark.parametrize("name", sorted(TAP_DIMS))
def test_tap_widths(name):
    model, x = built(name)
    with torch.no_grad():
        _, feats = model.eval()(x, taps=list(TAP_DIMS[name]))
    assert {t: z.shape[1:] for t, z in feats.items()} == {t: (d,) for t, d in TAP_DIMS[name].items()}


def _bottleneck(cin, p):
    """Parameters of a resnet110 bottleneck (convs without bias, BN has 2 per channel)."""
    body = cin * p + 2 * p + 9 * p * p + 2 * p + 4 * p * p + 8 * p
    shortcut = cin * 4 * p + 8 * p if cin != 4 * p else 0  # only where the shape changes
    return body + shortcut


def _madry_unit(cin, cout):
    return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout


# Counted by hand from the layer lists in SPEC section 6 (weights + biases, BN scale + shift).
PARAM_COUNTS = [
    # small_cnn MNIST: convs 1-32-32-64-64 (3x3), flatten 64*4*4 = 1024 -> 200 -> 200 -> K
    ("small_cnn", 1, 28, {}, (9 * 1 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64)
     + (1024 * 200 + 200) + (200 * 200 + 200) + (200 * K + K)),
    # lenet5 MNIST: 6@5x5, 16@5x5, 400 -> 120 -> 84 -> K
    ("lenet5", 1, 28, {}, (25 * 6 + 6) + (25 * 6 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * K + K)),
    # lenet5 CIFAR: 3 input channels, flatten 16*6*6 = 576
    ("lenet5", 3, 32, {}, (25 * 3 * 6 + 6) + (25 * 6 * 16 + 16) + (576 * 120 + 120) + (120 * 84 + 84) + (84 * K + K)),
    # cnn6: six 5x5 convs 1-32-32-64-64-128-128, 8 single-slope PReLUs, 128 -> 512 -> 64 -> K
    ("cnn6", 1, 28, {}, sum(25 * a * b + b for a, b in [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)])
     + 8 + (128 * 512 + 512) + (512 * 64 + 64) + (64 * K + K)),
    # madry_mnist: 32@5x5, 64@5x5, 7*7*64 -> 1024 -> K
    ("madry_mnist", 1, 28, {}, (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 1024 + 1024) + (1024 * K + K)),
    # madry_resnet CIFAR: stem 3->16, units 16-16 x5, 16-32 + 32-32 x4, 32-64 + 64-64 x4, BN 64, FC 64 -> K
    ("madry_resnet", 3, 32, {}, 9 * 3 * 16 + 5 * _madry_unit(16, 16) + _madry_unit(16, 32) + 4 * _madry_unit(32, 32)
     + _madry_unit(32, 64) + 4 * _madry_unit(64, 64) + 128 + (64 * K + K)),
    # resnet56 CIFAR: stem conv+BN; per stage 9 basic blocks = 18 conv+BN, the first a->b, 17 b->b;
    # option-A shortcuts have no parameters; FC 64 -> K
    ("resnet56", 3, 32, {}, (9 * 3 * 16 + 32)
     + sum((9 * a * b + 2 * b) + 17 * (9 * b * b + 2 * b) for a, b in [(16, 16), (16, 32), (32, 64)])
     + (64 * K + K)),
    # resnet110 CIFAR, 12 bottlenecks per stage, 1x1 projection shortcut on each stage's first block
    ("resnet110", 3, 32, {}, (9 * 3 * 16 + 32)
     + _bottleneck(16, 16) + 11 * _bottleneck(64, 16) + _bottleneck(64, 32) + 11 * _bottleneck(128, 32)
     + _bottleneck(128, 64) + 11 * _bottleneck(256, 64) + (256 * 1024 + 1024) + (1024 * K + K)),
]


@pytest.mark.parametrize("name,c,s,opts,expected", PARAM_COUNTS, ids=[f"{p[0]}-{p[1]}x{p[2]}" for p in PARAM_COUNTS])
def test_parameter_count(name, c, s, opts, expected):
    assert n_params(create_model(name, c, K, s, **opts)) == expected


def test_published_parameter_counts():
    # ResNet-56 (0.85M, He et al.) and WRN-34-10 (46.16M, TRADES) with 10 classes, CIFAR input.
    assert n_params(create_model("resnet56", 3, 10, 32)) == 853_018
    assert n_params(create_model("wrn34_10", 3, 10, 32)) == 46_160_474


def test_vgg_variants():
    plain = create_model("vgg11", 3, K, 32)
    bn = create_model("vgg11", 3, K, 32, batch_norm=True)
    assert plain.taps == ("block1", "block2", "block3", "block4", "fc1", "fc2", "logits")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 8
    for name, convs in [("vgg13", 10), ("vgg19", 16)]:
        model = create_model(name, 3, K, 32)
        assert model.taps == ("block1", "block2", "block3", "block4", "block5", "feature", "logits")
        assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == convs


def test_madry_resnet_standardizes_each_image():
    model, x = built("madry_resnet")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(0.5 * x + 0.2), model(x), atol=1e-4, rtol=1e-4)


def test_depth_options():
    r110 = create_model("resnet110", 3, K, 32, blocks_per_stage=2)
    # stem, three convs per bottleneck, one projection per stage
    assert sum(isinstance(m, torch.nn.Conv2d) for m in r110.modules()) == 1 + 3 * 2 * 3 + 3
    wrn = create_model("wrn34_10", 3, K, 32, depth=16, widen=2)
    assert [len(wrn.stages[f"layer{i}"]) for i in (1, 2, 3)] == [2, 2, 2]
    assert wrn.stages["logits"].in_features == 128
    with pytest.raises(WorkbenchError):
        create_model("wrn34_10", 3, K, 32, depth=33)
