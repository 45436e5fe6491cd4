"""Shared fixtures: real data only (bundled digits, MNIST from WORKBENCH_DATA), tiny real runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cores import my_cores, take_worker_share

# At most 2 intra-op threads, and under pytest-xdist the cores shared between the workers: OpenMP threads
# that outnumber the cores spin and crawl.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if "PYTEST_XDIST_WORKER" in os.environ:
    # xdist's workers start with COLUMNS=80 and LINES=24, which would pin the CLI's rich consoles (created at
    # import) to 80 columns: size them as in a serial run instead.
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)
take_worker_share(os.environ.get("PYTEST_XDIST_WORKER"), _workers)
torch.set_num_threads(max(1, min(2, torch.get_num_threads(), my_cores())))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Real MNIST from WORKBENCH_DATA (CI sets it to ../shared/data); skips with the reason elsewhere."""
    value = os.environ.get("WORKBENCH_DATA", "")
    root = Path(value) if value else None
    if root is None or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not found under WORKBENCH_DATA={value or '(unset)'}; set it to a folder with MNIST/raw")
    return root


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """One real quickstart training run (digits, offline, ~10 s), shared by tests that need a trained model."""
    from workbench.config import load_profile
    from workbench.training import prepare_run, run_training

    cfg, path = load_profile("quickstart")
    run = prepare_run(cfg, tmp_path_factory.mktemp("runs"), path)
    state = run_training(run.root, device="cpu")
    assert state == "finished"
    return run


@pytest.fixture(scope="session")
def model_and_data(quickstart_run):
    """The quickstart model (eval mode) and the first 200 digits test samples. Tests that change the
    model's mode restore it."""
    from workbench import load_data, load_model

    model = load_model(quickstart_run.best)
    x, y = load_data("digits", "test")
    return model, x[:200], y[:200]
