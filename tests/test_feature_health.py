"""Issue 19: ADR's feature health (mean |z|, dead-ReLU fraction, the rules that stop a broken run) and the
normalisation of z that small_cnn offers (`feature_norm`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defenses import create_defense
from defenses.adr import feature_stats
from workbench.config import load_profile
from workbench.errors import WorkbenchError
from workbench.models import create_model
from workbench.runs import Status, read_metrics
from workbench.training import prepare_run, run_training


def record(epoch, z_abs=1.0, dead=0.3, acc=0.9, phase="adr", test_acc=None):
    return {"epoch": epoch, "phase": phase, "loss_z_mean_abs": z_abs, "loss_z_dead_frac": dead, "train_acc": acc,
            "test_clean_acc": test_acc}


def adr(**params):
    return create_defense("adr", params, 10)


def test_feature_stats_by_hand():
    z = torch.tensor([[0.0, 2.0, -1.0, 0.0], [3.0, 0.0, 0.0, 1.0]])
    stats = feature_stats(z)
    assert stats["z_mean_abs"].item() == pytest.approx(7 / 8)
    assert stats["z_dead_frac"].item() == pytest.approx(4 / 8)


def test_a_healthy_run_passes_every_rule():
    history = [record(1, 1.0), record(2, 3.0), record(3, 6.0, dead=0.5)]
    assert adr().check_epoch(record(4, 9.5, dead=0.9, acc=0.97), history) is None


def test_dead_features_stop_the_run():
    message = adr().check_epoch(record(2, dead=0.995), [record(1)])
    assert "features died" in message and "99.5%" in message and "health_max_dead" in message
    assert "epoch 2" in message and "\n" not in message
    assert adr().check_epoch(record(2, dead=0.97), [record(1)]) is None  # ADV's own z gets sparse
    assert adr(health_max_dead=0.95).check_epoch(record(2, dead=0.97), [record(1)]) is not None
    assert adr(health_max_dead=None).check_epoch(record(2, dead=1.0), [record(1)]) is None


def test_runaway_features_stop_the_run_measured_from_the_first_epoch():
    history = [record(1, 0.6), record(2, 3.0)]
    assert adr().check_epoch(record(3, 5.9), history) is None
    message = adr().check_epoch(record(3, 6.1), history)
    assert "features ran away" in message and "10.2x" in message and "epoch 1" in message
    assert "health_max_growth" in message and "\n" not in message
    assert adr(health_max_growth=20.0).check_epoch(record(3, 6.1), history) is None
    assert adr(health_max_growth=None).check_epoch(record(3, 600.0), history) is None
    assert adr().check_epoch(record(1, 100.0), []) is None  # the first epoch has nothing to grow from


def test_after_a_warmup_growth_is_measured_from_its_last_epoch():
    history = [record(1, 0.6, phase="adv"), record(2, 8.0, phase="adv"), record(3, 20.0)]
    d = adr(warmup_epochs=2)
    assert d.check_epoch(record(4, 70.0), history) is None  # 8.75x the warm-up's last 8.0, 117x epoch 1's
    message = d.check_epoch(record(4, 90.0), history)
    assert "11.2x its 8 in epoch 2" in message


def test_predictions_at_chance_for_some_epochs_stop_the_run():
    d, at_chance = adr(), [record(1, acc=0.11), record(2, acc=0.12)]
    assert d.check_epoch(record(2, acc=0.12), at_chance[:1]) is None  # a slow start may still be learning
    message = d.check_epoch(record(3, acc=0.1), at_chance)
    assert "predictions collapsed" in message and "3 epoch(s)" in message and "\n" not in message
    assert d.check_epoch(record(3, acc=0.1), [record(1, acc=0.5), record(2, acc=0.1)]) is None
    # The test clean accuracy, when measured, decides (training accuracy mixes in nothing adversarial here,
    # but the test set is the better estimate).
    assert d.check_epoch(record(3, acc=0.1, test_acc=0.6), [record(1, acc=0.1, test_acc=0.6)] * 2) is None
    assert adr(health_chance_epochs=1).check_epoch(record(1, acc=0.1), []) is not None
    assert adr(health_chance_epochs=None).check_epoch(record(3, acc=0.1), [record(1, acc=0.1)] * 2) is None


def step(epoch, at, z_abs=1.0, dead=0.3, phase="adr"):
    return {"kind": "step", "epoch": epoch, "step": at, "phase": phase, "loss_z_mean_abs": z_abs,
            "loss_z_dead_frac": dead, "train_acc": 0.5}


def test_the_first_batch_sets_the_base_of_the_first_epoch_before_any_update():
    from defenses.base import BatchContext

    torch.manual_seed(0)
    model = create_model("small_cnn", 1, 10, 28)
    d = adr(steps=1, eps=0.1, step_size=0.1)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    d.training_loss(model, x, y, BatchContext(epoch=0, epochs=1, step=0))
    z = model(x, taps=["features"])[1]["features"]
    base = d.state_dict()["z_initial"]
    assert base["step"] == 0 and base["loss_z_mean_abs"] == pytest.approx(z.abs().mean().item(), rel=1e-5)
    d.training_loss(model, x * 0.5, y, BatchContext(epoch=0, epochs=1, step=1))  # later batches leave it
    assert d.state_dict()["z_initial"] == base
    # The paper's ADR-ADV averaged 1.4 over its first 20 steps from 0.68 at init: measured from the init value,
    # a window at 10.5x is stopped where the first window's base (7.5x) would let it through.
    ref = base["loss_z_mean_abs"]
    message = d.check_step(step(1, 20, 10.5 * ref), [])
    assert "10.5x its" in message and "at initialisation" in message


def test_without_an_initial_base_the_step_check_measures_from_the_first_record():
    d = adr()
    assert d.check_step(step(1, 20, 0.6), []) is None
    assert d.check_step(step(1, 40, 5.9), []) is None
    message = d.check_step(step(1, 60, 9.3), [])  # the collapse: 0.58 -> 9.3 in 40 steps
    assert "ADR stopped in epoch 1 at step 60, features ran away" in message
    assert "15.5x its 0.6 in the run's first 20 steps" in message and "\n" not in message
    assert "ADR stopped in epoch 1 at step 80, features died" in d.check_step(step(1, 80, 1.0, dead=0.995), [])
    # Later epochs measure from the epoch records, as check_epoch does.
    assert d.check_step(step(2, 500, 9.3), [record(1, 1.0)]) is None
    assert "10.5x its 1 in epoch 1" in d.check_step(step(2, 500, 10.5), [record(1, 1.0)])
    assert adr(health_max_growth=None).check_step(step(1, 20, 0.1), []) is None
    # A record without feature statistics (another defense's parts) is not checked.
    assert adr().check_step({"kind": "step", "epoch": 1, "step": 20}, []) is None


def test_the_first_record_survives_a_resume():
    d = adr()
    d.check_step(step(1, 20, 0.6), [])
    resumed = adr()
    resumed.load_state_dict(d.state_dict())
    assert "ran away" in resumed.check_step(step(1, 60, 6.1), [])
    fresh = adr()  # without the state, the first record after the resume would be the base
    assert fresh.check_step(step(1, 60, 6.1), []) is None
    assert adr().state_dict() == {}


def test_a_real_run_stops_within_its_first_epoch_with_the_reason(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=2", "eval.robust_every=0", "adv_train.attack=none",
                                            "defense=adr", "defense.steps=2", "defense.eps=0.1", "log_every=2",
                                            "defense.step_size=0.05", "defense.health_max_dead=0.01"])
    run = prepare_run(cfg, tmp_path / "r", path)
    assert run_training(run.root, device="cpu") == "failed"
    status = Status.read(run.status)
    assert "ADR stopped in epoch 1 at step 2, features died" in status.message and "\n" not in status.message
    assert status.message.endswith("stopped before any checkpoint was written")  # no lr advice: not a nan
    records = list(read_metrics(run.metrics))
    assert not [r for r in records if r["kind"] == "epoch"]  # stopped at its first log point
    (rec,) = [r for r in records if r["kind"] == "step"]  # the record that broke the rule is kept
    assert rec["loss_z_dead_frac"] > 0.01 and rec["phase"] == "adr"
    assert not run.last.exists()


# -- z normalisation (small_cnn feature_norm) -------------------------------------------------------------------------
def last_conv_z(model, x, scale=1.0):
    """z computed by hand from the last conv's output times `scale` (a stand-in for grown conv weights)."""
    conv = model.stages["features"]
    convs = [i for i, m in enumerate(conv) if isinstance(m, nn.Conv2d)]
    h = conv[: convs[-1] + 1](x) * scale
    return conv[convs[-1] + 1:](h)


@pytest.mark.parametrize("kind,norm", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm)])
def test_feature_norm_sits_before_z_and_takes_its_scale_away(kind, norm):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28)
    plain = create_model("small_cnn", 1, 10, 28).train()
    normed = create_model("small_cnn", 1, 10, 28, feature_norm=kind).train()
    layers = list(normed.stages["features"])
    at = next(i for i, m in enumerate(layers) if isinstance(m, norm))
    assert isinstance(layers[at - 1], nn.Conv2d) and isinstance(layers[at + 1], nn.ReLU)  # conv4, norm, ReLU, pool
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    _, taps = normed(x, taps=["features"])
    z = taps["features"]
    assert torch.allclose(z, last_conv_z(normed, x)) and (z >= 0).all() and (z == 0).any()  # post-ReLU, tapped
    # Grown conv weights grow the plain net's z; normalised, z stays the same.
    assert torch.allclose(last_conv_z(plain, x, 10.0), 10 * plain(x, taps=["features"])[1]["features"], atol=1e-5)
    assert torch.allclose(last_conv_z(normed, x, 10.0), z, atol=1e-3)  # up to the norm's epsilon


def test_feature_norm_defaults_to_the_papers_net_and_rejects_unknown_values():
    a, b = create_model("small_cnn", 1, 10, 28), create_model("small_cnn", 1, 10, 28, feature_norm="none")
    assert list(a.state_dict()) == list(b.state_dict())
    with pytest.raises(WorkbenchError, match="feature_norm 'group'"):
        create_model("small_cnn", 1, 10, 28, feature_norm="group")
    with pytest.raises(WorkbenchError, match="model.feature_norm"):
        load_profile("adr_adv_mnist", ["model.feature_norm=group"])
