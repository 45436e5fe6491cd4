"""The gradient-masking audit passes an honest model and flags one with obfuscated gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench import load_data, load_model
from workbench.evaluation.audit import audit_model


class Quantized(nn.Module):
    """Input quantization: rounding has zero gradient almost everywhere (shattered gradients)."""

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


@pytest.fixture(scope="module")
def digits(quickstart_run):
    x, y = load_data("digits", "test")
    return load_model(quickstart_run.best), x[:120], y[:120]


def statuses(result):
    return {c["name"]: c["status"] for c in result["checks"]}


def test_plain_model_passes(digits):
    model, x, y = digits
    result = audit_model(model, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=300)
    st = statuses(result)
    assert result["verdict"] == "pass", result["checks"]
    assert st["white-box >= transfer"] == "skip"  # no source given
    assert set(st.values()) <= {"pass", "skip"}


def test_quantized_model_is_flagged(digits):
    model, x, y = digits
    masked = Quantized(model).eval()
    result = audit_model(masked, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=300)
    st = statuses(result)
    assert result["verdict"] == "warn"
    # gradients are zero, so a gradient-free attack beats every gradient attack
    assert st["white-box >= gradient-free"] == "warn", result["checks"]


def test_transfer_check_uses_the_source(digits):
    model, x, y = digits
    masked = Quantized(model).eval()
    # The unquantized model is a near-perfect surrogate: its transferred examples beat white-box attacks
    # on the quantized copy, which the transfer check must flag.
    result = audit_model(masked, x, y, dataset="digits", eps=0.1, large_eps=0.6, queries=100, source_model=model)
    assert statuses(result)["white-box >= transfer"] == "warn", result["checks"]
