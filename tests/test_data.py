"""Dataset layer, on real files: MNIST from WORKBENCH_DATA, sklearn digits, generated Tiny ImageNet trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from workbench.data import DATASETS, download_allowed, load_data, load_raw, resolve_data_root
from workbench.errors import WorkbenchError


def _assert_one_line(err: WorkbenchError) -> str:
    message = str(err)
    assert message and "\n" not in message
    return message


# --- MNIST (only where the real files are available) ------------------------------------


@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_mnist_splits(mnist_root, split, count):
    x, y = load_data("mnist", split, root=mnist_root, download=False)
    assert x.shape == (count, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert y.shape == (count,) and y.dtype == torch.int64
    assert sorted(y.unique().tolist()) == list(range(10))


def test_mnist_raw_is_uint8(mnist_root):
    x, y = load_raw("mnist", "test", root=mnist_root, download=False)
    assert x.dtype == torch.uint8 and x.shape == (10000, 1, 28, 28) and y.dtype == torch.int64


# --- digits (bundled with scikit-learn) -------------------------------------------------


def test_digits_shapes_and_range():
    spec = DATASETS.get("digits")
    assert (spec.channels, spec.image_size, spec.num_classes) == (1, 8, 10)
    x, y = load_data("digits", "train")
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    raw, _ = load_raw("digits", "train")
    assert raw.dtype == torch.uint8 and int(raw.max()) == 255
    assert y.dtype == torch.int64 and len(y) == len(x)


def test_digits_split_is_fixed_and_disjoint():
    train_x, train_y = load_raw("digits", "train")
    test_x, test_y = load_raw("digits", "test")
    again_x, again_y = load_raw("digits", "test")
    assert torch.equal(test_x, again_x) and torch.equal(test_y, again_y)
    assert len(train_y) + len(test_y) == 1797
    assert 340 <= len(test_y) <= 380  # about 20%
    assert sorted(test_y.unique().tolist()) == list(range(10))
    # Disjoint: every image appears once across both splits (sklearn digits has no duplicates).
    rows = {tuple(r.tolist()) for r in torch.cat([train_x, test_x]).flatten(1)}
    assert len(rows) == 1797


def test_digits_caller_cannot_corrupt_the_split():
    x, _ = load_raw("digits", "test")
    x.zero_()
    assert int(load_raw("digits", "test")[0].max()) == 255


# --- missing data -----------------------------------------------------------------------


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(WorkbenchError) as info:
        load_raw("mnist", "train", root=tmp_path, download=False)
    message = _assert_one_line(info.value)
    assert "'mnist'" in message and str(tmp_path) in message and "MNIST/raw" in message


def test_missing_dataset_offline_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    with pytest.raises(WorkbenchError) as info:
        load_raw("cifar10", "test", root=tmp_path)
    message = _assert_one_line(info.value)
    assert "'cifar10'" in message and str(tmp_path) in message
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    # A proxy on a closed local port makes every download fail fast, with or without network.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WorkbenchError) as info:
        load_raw("kmnist", "test", root=tmp_path, download=True)
    message = _assert_one_line(info.value)
    assert "'kmnist'" in message and str(tmp_path) in message and "download failed" in message


# --- tiny_imagenet (generated ImageFolder tree) ------------------------------------------


def _write_image(path: Path, colour: tuple[int, int, int], size=(64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    base = tmp_path / "tiny_imagenet"
    for split in ("train", "val"):
        _write_image(base / split / "ant" / "images" / "a0.png", (255, 0, 0))  # nested subfolder
        _write_image(base / split / "ant" / "images" / "a1.png", (250, 0, 0))
        _write_image(base / split / "bee" / "b0.png", (0, 255, 0), size=(40, 50))  # needs resizing
        _write_image(base / split / "bee" / "b1.png", (0, 250, 0))
        _write_image(base / split / "cat" / "c0.jpg", (0, 0, 255))
        _write_image(base / split / "cat" / "c1.jpg", (0, 0, 250))
    return tmp_path


def test_tiny_imagenet_loads_and_resizes(tiny_root):
    x, y = load_raw("tiny_imagenet", "train", root=tiny_root)
    assert x.shape == (6, 3, 64, 64) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert x[2, 1].float().mean() > 250 and x[2, 0].float().mean() < 5  # resized green image
    xt, yt = load_data("tiny_imagenet", "test", root=tiny_root)  # "test" reads val/
    assert xt.shape == (6, 3, 64, 64) and yt.tolist() == [0, 0, 1, 1, 2, 2]


def test_tiny_imagenet_cache(tiny_root):
    cache = tiny_root / "tiny_imagenet" / ".workbench-cache-train.pt"
    first = load_raw("tiny_imagenet", "train", root=tiny_root)
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    second = load_raw("tiny_imagenet", "train", root=tiny_root)
    assert cache.stat().st_mtime_ns == stamp  # served from the cache, not rebuilt
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])

    # A new image makes the folder newer than the cache: rebuilt with 7 images.
    os.utime(cache, (1, 1))
    _write_image(tiny_root / "tiny_imagenet" / "train" / "cat" / "c2.jpg", (0, 0, 200))
    assert len(load_raw("tiny_imagenet", "train", root=tiny_root)[1]) == 7

    # An unreadable cache is rebuilt, not fatal.
    cache.write_bytes(b"not a torch file")
    assert len(load_raw("tiny_imagenet", "train", root=tiny_root)[1]) == 7


def test_tiny_imagenet_val_uses_train_class_numbers(tiny_root):
    val = tiny_root / "tiny_imagenet" / "val"
    for image in (val / "ant").rglob("*.png"):
        image.unlink()
    _, y = load_raw("tiny_imagenet", "test", root=tiny_root)
    assert y.tolist() == [1, 1, 2, 2]  # bee and cat keep train's indices


def test_tiny_imagenet_official_val_layout(tiny_root):
    # The official download ships val/ as one images/ folder plus val_annotations.txt.
    import shutil

    val = tiny_root / "tiny_imagenet" / "val"
    shutil.rmtree(val)
    _write_image(val / "images" / "val_0.png", (0, 0, 255))
    _write_image(val / "images" / "val_1.png", (255, 0, 0))
    (val / "val_annotations.txt").write_text("val_0.png\tcat\t0\t0\t64\t64\nval_1.png\tant\t0\t0\t64\t64\n")
    x, y = load_raw("tiny_imagenet", "test", root=tiny_root)
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [2, 0]


def test_tiny_imagenet_missing_folder(tmp_path):
    with pytest.raises(WorkbenchError) as info:
        load_raw("tiny_imagenet", "train", root=tmp_path)
    message = _assert_one_line(info.value)
    assert "tiny_imagenet" in message and str(tmp_path) in message and "not downloaded" in message


# --- data root and download policy -------------------------------------------------------


def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("WORKBENCH_DATA")
    assert resolve_data_root() == tmp_path / "xdg" / "workbench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "workbench" / "data"


def test_download_allowed(monkeypatch):
    monkeypatch.delenv("WORKBENCH_OFFLINE", raising=False)
    assert download_allowed(None) is True
    for value in ("1", "true", "TRUE"):
        monkeypatch.setenv("WORKBENCH_OFFLINE", value)
        assert download_allowed(None) is False
        assert download_allowed(True) is True
    monkeypatch.setenv("WORKBENCH_OFFLINE", "0")
    assert download_allowed(None) is True
    assert download_allowed(False) is False


# --- registry and arguments --------------------------------------------------------------


def test_registered_specs():
    names = set(DATASETS.names())
    assert {"mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn", "digits", "tiny_imagenet"} <= names
    for name, spec in DATASETS.items():
        assert len(spec.mean) == len(spec.std) == spec.channels
        assert spec.augment in ("none", "crop_flip")
    assert DATASETS.get("cifar10").augment == "crop_flip" and DATASETS.get("mnist").augment == "none"


def test_unknown_dataset_lists_choices():
    with pytest.raises(WorkbenchError) as info:
        load_raw("imagenet22k")
    message = _assert_one_line(info.value)
    assert "imagenet22k" in message and "mnist" in message and "digits" in message


def test_bad_split():
    with pytest.raises(WorkbenchError) as info:
        load_raw("digits", "validation")
    message = _assert_one_line(info.value)
    assert "validation" in message and "train" in message and "test" in message
