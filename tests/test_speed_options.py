"""The speed options (mixed precision, channels-last, torch.compile) change how fast a run goes, not what it
learns: a short quickstart run with each option lands within noise of the float32 eager run, in clean and in
robust accuracy (the epoch-end PGD evaluation runs under the same option)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from workbench.accel import resolve_amp
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile, read_yaml
from workbench.errors import WorkbenchError
from workbench.runs import read_metrics
from workbench.training import prepare_run, run_training

SHORT = ["epochs=6", "eval.robust_every=6"]


def final_epoch(tmp_path, name: str, sets: list[str]) -> tuple[dict, object]:
    cfg, path = load_profile("quickstart", [*SHORT, *sets])
    run = prepare_run(cfg, tmp_path / name, path)
    assert run_training(run.root, device="cpu") == "finished"
    return [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"][-1], run


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    return final_epoch(tmp_path_factory.mktemp("fp32"), "fp32", [])[0]


# Tolerances: 359 digits test samples (one sample = 0.28 points). Measured gaps to float32 after 6 epochs were
# <= 1 point clean and <= 2 points robust (bf16, fp16); a broken option (e.g. an attack stepping on bf16
# inputs, or a scaler that skips every step) moves them by tens of points.
@pytest.mark.parametrize("option", [["performance.amp=bf16"], ["performance.amp=fp16"],
                                    ["performance.channels_last=true"]], ids=["bf16", "fp16", "channels_last"])
def test_option_matches_float32(option, float32_run, tmp_path):
    record, run = final_epoch(tmp_path, "opt", option)
    assert abs(record["test_clean_acc"] - float32_run["test_clean_acc"]) <= 0.04, (record, float32_run)
    assert abs(record["test_robust_acc"] - float32_run["test_robust_acc"]) <= 0.05, (record, float32_run)
    assert record["train_loss"] == pytest.approx(float32_run["train_loss"], rel=0.1)
    # Whatever ran the forward pass, the checkpoint holds float32 weights in the usual layout.
    state = read_checkpoint(run.last)["state_dict"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())


def test_compiled_model_trains_and_evaluates_like_eager(float32_run, tmp_path):
    """torch.compile of the model used by the training step, the PGD adversary and the evaluation attack."""
    record, run = final_epoch(tmp_path, "compiled", ["performance.compile=true"])
    assert abs(record["test_clean_acc"] - float32_run["test_clean_acc"]) <= 0.02
    assert abs(record["test_robust_acc"] - float32_run["test_robust_acc"]) <= 0.03
    state = read_checkpoint(run.last)["state_dict"]
    assert not any(k.startswith("_orig_mod") for k in state)  # the plain model is saved, loadable anywhere


def test_amp_auto_is_float32_on_cpu_and_yaml_off_means_off():
    assert resolve_amp("auto", "cpu") is None
    assert resolve_amp("off", "cpu") is None and resolve_amp("bf16", "cpu") is torch.bfloat16
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_amp("auto", "cuda") is torch.bfloat16
    cfg, _ = load_profile("quickstart", ["performance.amp=off"])  # YAML reads a bare off as false
    assert cfg.performance.amp == "off"


def test_fp16_with_self_updated_prototypes_is_refused():
    with pytest.raises(WorkbenchError, match="fp16"):
        load_profile("quickstart", ["defense=pcl", "defense.heads=[fc1]", "performance.amp=fp16"])


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_speed_flags_land_in_the_run_config(tmp_path):
    out = cli("train", "--profile", "quickstart", "--set", "epochs=1", "--set", "eval.robust_every=0",
              "--set", "data.train_subset=128", "--set", "eval.clean_subset=64",
              "--amp", "bf16", "--channels-last", "--no-cudnn-benchmark", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (run,) = tmp_path.iterdir()
    perf = read_yaml(run / "config.yaml")["performance"]
    assert perf == {"amp": "bf16", "channels_last": True, "compile": False, "cudnn_benchmark": False}
    bad = cli("train", "--profile", "quickstart", "--amp", "fp8", "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "performance.amp" in bad.stderr and "Traceback" not in bad.stderr
    again = cli("train", "--resume", str(run), "--compile")
    assert again.returncode != 0 and "--resume" in again.stderr and "Traceback" not in again.stderr
