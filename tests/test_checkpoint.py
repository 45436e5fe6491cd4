"""Checkpoints: round trip, atomic writes, untrusted input rejected without running code, load_model."""

from __future__ import annotations

import os
import pickle
import random
import warnings
from contextlib import contextmanager

import pytest
import torch

import workbench
from workbench.checkpoint import FORMAT, VERSION, atomic_write_bytes, read_checkpoint, save_checkpoint
from workbench.config import load_profile
from workbench.data import load_data
from workbench.errors import WorkbenchError


@contextmanager
def single_thread():
    """Train the tiny model on one thread: on a small, busy machine two OpenMP threads spin and crawl."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def one_line(msg: str) -> bool:
    """A message fit for one terminal line: non-empty, no newlines, no control/escape characters."""
    return bool(msg.strip()) and all(ch.isprintable() for ch in msg)


# -- a real checkpoint, from a short training run ------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from workbench.training import prepare_run, run_training

    cfg, path = load_profile("quickstart", ["epochs=1", "eval.robust_every=0"])
    run = prepare_run(cfg, tmp_path_factory.mktemp("runs"), path)
    with single_thread():
        state = run_training(run.root, device="cpu")
    assert state == "finished"
    return run


@pytest.fixture(scope="module")
def ckpt_bytes(trained) -> bytes:
    return trained.last.read_bytes()


# -- round trip -------------------------------------------------------------------------------


def sample_data():
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"name": "tiny", "in_channels": 1, "num_classes": 10, "image_size": 8, "normalize": None,
                  "options": {"width": 4}, "defense": {"name": "softmax", "params": {}}},
        "state_dict": {"w": torch.randn(3, 4, generator=g), "b": torch.arange(5), "m": torch.tensor([True, False])},
        "history": [{"epoch": 1, "test_clean_acc": 0.5, "test_robust_acc": None}],
        "position": {"epoch": 1, "batch": 0, "step": 17},
        "best_value": 0.25,
        "dataset": "digits",
        "rng": {"torch": torch.get_rng_state()},
        "tags": ("a", "b"),
        "flag": True,
    }


def test_round_trip(tmp_path):
    data = sample_data()
    path = tmp_path / "sub" / "ck.pt"  # the folder is created
    save_checkpoint(data, path)
    back = read_checkpoint(path)
    assert back["format"] == FORMAT and back["version"] == VERSION
    assert set(back) == set(data) | {"format", "version"}
    for k, v in data["state_dict"].items():
        assert back["state_dict"][k].dtype == v.dtype
        assert torch.equal(back["state_dict"][k], v)
    assert torch.equal(back["rng"]["torch"], data["rng"]["torch"])
    for key in ("model", "history", "position", "best_value", "dataset", "tags", "flag"):
        assert back[key] == data[key], key


def test_checkpoint_loads_with_plain_torch_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(sample_data(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    assert torch.equal(raw["state_dict"]["w"], sample_data()["state_dict"]["w"])


def test_real_checkpoint_loads_with_plain_torch_weights_only(trained):
    for path in (trained.last, trained.best):
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert raw["format"] == FORMAT and raw["dataset"] == "digits"
        assert raw["model"]["name"] == "tiny"
        assert all(isinstance(t, torch.Tensor) for t in raw["state_dict"].values())


# -- atomic writes -----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, error):
    path = tmp_path / "file.bin"
    path.write_bytes(b"previous content")

    def write(fh):
        fh.write(b"new half-written con")
        fh.flush()
        raise error("disk on fire")

    with pytest.raises(error):
        atomic_write_bytes(path, write)
    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["file.bin"]


def test_failed_write_of_new_file_leaves_nothing(tmp_path):
    def write(fh):
        fh.write(b"x" * 1000)
        raise OSError("no space left")

    with pytest.raises(WorkbenchError, match="no space left"):  # a failed write is one line naming the file
        atomic_write_bytes(tmp_path / "new.bin", write)
    assert os.listdir(tmp_path) == []


def test_failed_checkpoint_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(sample_data(), path)
    before = path.read_bytes()
    bad = sample_data()
    bad["state_dict"] = {"w": torch.zeros(1000), "oops": lambda: None}  # torch.save fails part-way
    with pytest.raises(Exception):
        save_checkpoint(bad, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], sample_data()["state_dict"]["w"])


def test_write_replaces_the_file_rather_than_rewriting_it(tmp_path):
    # A reader that opened the old checkpoint keeps reading a complete old file.
    path = tmp_path / "last.pt"
    atomic_write_bytes(path, lambda fh: fh.write(b"A" * 4096))
    with open(path, "rb") as reader:
        atomic_write_bytes(path, lambda fh: fh.write(b"B" * 10))
        assert reader.read() == b"A" * 4096
    assert path.read_bytes() == b"B" * 10
    assert os.listdir(tmp_path) == ["last.pt"]


# -- untrusted input ---------------------------------------------------------------------------


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpenCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _write_malicious(kind: str, path, marker) -> None:
    if kind == "torch_zip_os_system":
        torch.save({"format": FORMAT, "version": VERSION, "model": {}, "state_dict": {}, "x": _SystemCall(marker)}, path)
    elif kind == "torch_legacy_open":
        torch.save({"x": _OpenCall(marker)}, path, _use_new_zipfile_serialization=False)
    elif kind == "raw_pickle_os_system":
        path.write_bytes(pickle.dumps({"x": _SystemCall(marker)}))
    else:  # raw pickle, protocol 2 (torch's own), calling open()
        path.write_bytes(pickle.dumps({"x": _OpenCall(marker)}, protocol=2))


@pytest.mark.parametrize("kind", ["torch_zip_os_system", "torch_legacy_open", "raw_pickle_os_system", "raw_pickle_open"])
def test_malicious_pickle_is_rejected_without_running_code(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    _write_malicious(kind, path, marker)
    assert not marker.exists()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WorkbenchError) as exc:
        warnings.simplefilter("always")
        read_checkpoint(path)
    assert not marker.exists(), "code from the checkpoint ran"
    # Anything torch prints besides the error would break the CLI's one-line contract.
    assert not caught, [str(w.message)[:120] for w in caught]
    msg = str(exc.value)
    assert one_line(msg), repr(msg)
    assert str(path) in msg
    with pytest.raises(WorkbenchError):
        workbench.load_model(path)
    assert not marker.exists(), "code from the checkpoint ran"


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.95])
def test_truncated_checkpoint(tmp_path, ckpt_bytes, fraction):
    path = tmp_path / "trunc.pt"
    path.write_bytes(ckpt_bytes[: int(len(ckpt_bytes) * fraction)])
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert one_line(msg) and str(path) in msg, repr(msg)
    with pytest.raises(WorkbenchError):
        workbench.load_model(path)


def _random_bytes(seed: int, n: int = 4096) -> bytes:
    return random.Random(seed).randbytes(n)


# Fixed seeds, so a failure reproduces: torch.load(weights_only=True) fails on these with
# UnpicklingError (0), IndexError 'pop from empty list' (2), IndexError 'list index out of range' (61),
# KeyError (20) and UnicodeDecodeError (195).
@pytest.mark.parametrize("content", [*(_random_bytes(s) for s in (0, 2, 61, 20, 195)), b"",
                                     b"hello, not a checkpoint\n", b"PK\x03\x04" + _random_bytes(7, 200)],
                         ids=["random0", "random2", "random61", "random20", "random195", "empty", "text", "fake_zip"])
def test_garbage_files(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert one_line(msg) and str(path) in msg, repr(msg)


def test_plain_state_dict_is_not_a_workbench_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    torch.load(path, weights_only=True)  # a perfectly valid torch file...
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert one_line(msg) and str(path) in msg
    assert "not a workbench checkpoint" in msg


@pytest.mark.parametrize("payload", [[1, 2, 3], {"format": FORMAT, "version": VERSION + 1, "model": {}, "state_dict": {}},
                                     {"format": FORMAT, "version": VERSION, "state_dict": {}}],
                         ids=["list", "future_version", "incomplete"])
def test_other_torch_files_rejected(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(path)
    assert one_line(str(exc.value)) and str(path) in str(exc.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WorkbenchError) as exc:
        read_checkpoint(tmp_path / "missing.pt")
    assert "missing.pt" in str(exc.value) and one_line(str(exc.value))
    with pytest.raises(WorkbenchError) as exc:
        workbench.load_model(tmp_path)
    assert str(tmp_path) in str(exc.value) and one_line(str(exc.value))


def test_state_dict_that_does_not_match_recipe(tmp_path, trained):
    data = read_checkpoint(trained.last)
    data["model"] = {**data["model"], "options": {**data["model"]["options"], "width": 8}}
    path = tmp_path / "mismatch.pt"
    save_checkpoint({k: v for k, v in data.items() if k not in ("format", "version")}, path)
    with pytest.raises(WorkbenchError) as exc:
        workbench.load_model(path)
    assert one_line(str(exc.value)) and str(path) in str(exc.value)


# -- load_model on a real run ------------------------------------------------------------------


def test_real_run_checkpoints(trained):
    assert trained.last.is_file() and trained.best.is_file()
    data = read_checkpoint(trained.last)
    assert data["position"]["epoch"] == 1 and data["dataset"] == "digits"
    assert len(data["history"]) == 1
    # No temp files left beside the checkpoints.
    assert sorted(p.name for p in trained.checkpoints.iterdir()) == ["best.pt", "last.pt"]


def test_load_model_is_eval_mode_and_matches_recorded_accuracy(trained):
    model = workbench.load_model(trained.best)
    assert not model.training
    assert not any(m.training for m in model.modules())
    assert all(not p.is_cuda for p in model.parameters())
    x, y = load_data("digits", "test")
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (len(y), 10) and torch.isfinite(logits).all()
    acc = (logits.argmax(1) == y).float().mean().item()
    recorded = read_checkpoint(trained.best)["history"][-1]["test_clean_acc"]
    assert acc == pytest.approx(recorded, abs=1e-6)
    assert acc > 0.2  # one epoch learns something (chance is 0.1)


def test_load_model_logits_match_the_trainers_model(tmp_path):
    from workbench.training import Trainer, prepare_run
    from workbench.training.session import load_run_config

    cfg, path = load_profile("quickstart", ["epochs=1", "eval.robust_every=0", "data.train_subset=512"])
    run = prepare_run(cfg, tmp_path, path)
    with single_thread():
        trainer = Trainer(load_run_config(run), run, torch.device("cpu"))
        assert trainer.train() == "finished"
    x, _ = load_data("digits", "test")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x)
    for ckpt in (run.last, run.best):
        model = workbench.load_model(ckpt)
        assert not model.training
        with torch.no_grad():
            got = model(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
