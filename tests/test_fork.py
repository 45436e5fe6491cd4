"""Forks (training/fork.py): a run that starts from another run's snapshot after the epochs they share ends
bit-identical to training from the first epoch, and a run that would have trained those epochs differently is
refused and trains from the start."""

from __future__ import annotations

import json

import pytest
import torch

from stopping import train_stopped_at
from workbench import load_data
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.runs import RunPaths, read_metrics
from workbench.training import Trainer, prepare_run, run_training
from workbench.training.fork import fork_refusal, shared_epochs

# The pcl_mnist pattern on digits: PCL with a CE warm-up of 1 epoch, then adversarial training on a subset.
PCL_AT = ["eval.robust_every=0", "defense=pcl", "defense.heads=[{tap: features, fc: [32]}, fc1]",
          "defense.warmup_epochs=1", "epochs=3", "adv_train.phases=last_phase", "adv_train.pairing=concat",
          "adv_train.ratio=0.5", "adv_train.train_subset=192",
          "schedule={name: multistep, milestones: [2], gamma: 0.5, per_phase: false}"]
SOURCE = [*PCL_AT, "adv_train.attack=pgd", "adv_train.steps=3", "adv_train.eps=[0.1, 0.2]"]
# Another training attack, push weight and a warm-up gate: none of them acts in the first (warm-up) epoch.
TARGET = [*PCL_AT, "adv_train.attack=fgsm", "adv_train.eps=[0.1, 0.3]", "defense.push_weight=1e-5",
          "defense.warmup_until_clean=0.99", "defense.warmup_max_epochs=2"]


def train(tmp_path, name: str, overrides: list[str], **kwargs) -> RunPaths:
    cfg, path = load_profile("quickstart", overrides)
    run = prepare_run(cfg, tmp_path / name, path)
    assert run_training(run.root, device="cpu", **kwargs) == "finished"
    return run


def assert_same_state(a: RunPaths, b: RunPaths) -> None:
    x, y = read_checkpoint(a.last), read_checkpoint(b.last)
    for part in ("state_dict", "auxiliary"):
        assert x[part].keys() == y[part].keys()
        for k in x[part]:
            assert torch.equal(x[part][k], y[part][k]), f"{part}.{k}"
    for i, (p, q) in enumerate(zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values())):
        for k in p:
            assert torch.equal(torch.as_tensor(p[k]), torch.as_tensor(q[k])), f"optimizer state {i}.{k}"
    assert len(x["optimizer"]["state"]) == len(y["optimizer"]["state"])
    assert torch.equal(x["rng"]["torch"], y["rng"]["torch"])
    assert torch.equal(x["rng"]["adversary"]["eps_generator"], y["rng"]["adversary"]["eps_generator"])
    assert [r["test_clean_acc"] for r in x["history"]] == [r["test_clean_acc"] for r in y["history"]]
    assert [r["phase"] for r in x["history"]] == [r["phase"] for r in y["history"]]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The run others fork from: it keeps its state after epochs 1 and 2."""
    return train(tmp_path_factory.mktemp("fork"), "source", SOURCE, snapshot_epochs=[1, 2])


def test_a_forked_run_ends_bit_identical_to_training_from_the_first_epoch(tmp_path, source, capsys):
    snapshot = source.snapshot(1)
    assert {p.name for p in snapshot.iterdir()} == {"last.pt", "best.pt", "metrics.jsonl"}
    cold = train(tmp_path, "cold", TARGET)
    # The source's epoch 2 trains PCL, the target's its gated warm-up: the later snapshot is refused.
    forked = train(tmp_path, "forked", TARGET, fork_from=[source.snapshot(2), snapshot])
    assert f"not starting from {source.snapshot(2)}: the defenses train epoch 2 differently" in capsys.readouterr().out
    assert_same_state(cold, forked)
    meta = json.loads((forked.root / "run.json").read_text())
    assert meta["forked_from"] == {"snapshot": str(snapshot), "epochs": 1}
    # The shared epoch's records are the forked run's: its charts start at epoch 1, and no step appears twice.
    steps = [r["step"] for r in read_metrics(forked.metrics) if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps == [r["step"] for r in read_metrics(cold.metrics)
                                                     if r["kind"] == "step"]
    # The source went on training after its snapshot, which still holds epoch 1.
    assert read_checkpoint(snapshot / "last.pt")["position"]["epoch"] == 1
    assert read_checkpoint(source.last)["position"]["epoch"] == 3


def test_shared_epochs_of_the_last_phase_carry_best_pt(tmp_path, source):
    """The same run with another lr schedule after epoch 2 shares its PCL epoch 2, which competes for best.pt:
    the fork starts with the source's best.pt (under its own config), and ends as training alone would."""
    later_milestone = [*SOURCE, "schedule={name: multistep, milestones: [], gamma: 0.5, per_phase: false}"]
    cfg, path = load_profile("quickstart", later_milestone)
    forked = prepare_run(cfg, tmp_path / "forked", path)
    trainer = Trainer(cfg, forked, torch.device("cpu"))
    assert trainer.fork(source.snapshot(2)) is None
    kept, best = read_checkpoint(source.snapshot(2) / "best.pt"), read_checkpoint(forked.best)
    assert kept["position"]["epoch"] == best["position"]["epoch"] == 2 and best["config"]["schedule"]["milestones"] == []
    assert all(torch.equal(kept["state_dict"][k], best["state_dict"][k]) for k in kept["state_dict"])
    assert trainer.train() == "finished"
    cold = train(tmp_path, "cold", later_milestone)
    assert_same_state(cold, forked)
    a, b = read_checkpoint(cold.best), read_checkpoint(forked.best)
    assert a["position"] == b["position"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_source_stopped_before_its_snapshot_writes_it_when_resumed(tmp_path, source):
    cfg, path = load_profile("quickstart", SOURCE)
    run = prepare_run(cfg, tmp_path / "stopped", path)
    last_batch = -(-len(load_data("digits", "train")[1]) // cfg.batch_size)
    assert train_stopped_at(run, epoch=0, batch=last_batch) == "stopped"  # after epoch 1, without a snapshot
    assert not run.snapshot(1).exists()
    assert run_training(run.root, device="cpu", snapshot_epochs=[1]) == "finished"
    kept, straight = read_checkpoint(run.snapshot(1) / "last.pt"), read_checkpoint(source.snapshot(1) / "last.pt")
    assert kept["position"]["epoch"] == 1 and kept["init_digest"] == straight["init_digest"]
    assert all(torch.equal(kept["state_dict"][k], straight["state_dict"][k]) for k in kept["state_dict"])


def test_a_run_that_would_train_the_shared_epochs_differently_trains_from_the_start(tmp_path, source, capsys):
    changed = [*TARGET, "optimizer.lr=0.002"]
    forked = train(tmp_path, "refused", changed, fork_from=[source.snapshot(1)])
    assert "not starting from" in capsys.readouterr().out
    assert "forked_from" not in json.loads((forked.root / "run.json").read_text())
    assert_same_state(train(tmp_path, "cold", changed), forked)


def test_another_seed_starts_elsewhere_and_is_refused(tmp_path, source, capsys):
    forked = train(tmp_path, "seed1", [*TARGET, "seed=1"], fork_from=[source.snapshot(1)])
    assert "the runs start from different states" in capsys.readouterr().out
    assert read_checkpoint(forked.last)["history"][0]["epoch"] == 1 and "forked_from" not in \
        json.loads((forked.root / "run.json").read_text())


def cfg(overrides: list[str]):
    return load_profile("quickstart", overrides)[0]


@pytest.mark.parametrize("target, epochs, why", [
    (TARGET, 1, None),  # the warm-up; the gate may stretch the target's, never the source's
    ([*SOURCE, "epochs=4"], 1, None),  # the same run, longer: its PCL epochs may read the run's length
    ([*TARGET, "defense.warmup_epochs=2", "defense.warmup_max_epochs=null", "defense.warmup_until_clean=null"], 1,
     None),  # a longer warm-up: the source's PCL epoch 2 is not the target's
    ([*TARGET, "batch_size=32"], 0, "the configs differ in batch_size"),
    ([o.replace("=pcl", "=ds_center") for o in SOURCE], 0, "the defenses train epoch 1 differently"),
    ([*TARGET, "adv_train.phases=all"], 0, "only one of the runs trains epoch 1 on adversarial examples"),
    ([*TARGET, "schedule={name: multistep, milestones: [1], gamma: 0.5, per_phase: false}"], 1, None),
    ([*TARGET, "schedule={name: cosine}"], 0, "the lr schedules differ in epoch 1"),
])
def test_shared_epochs_follow_what_each_epoch_trains(target, epochs, why):
    a, b = cfg(SOURCE), cfg(target)
    assert shared_epochs(a, b, 10) == epochs
    if why is not None:
        assert fork_refusal(a, b, 1, 10) == why


def test_a_softmax_run_shares_nothing_with_a_pcl_warm_up():
    """Both train CE at first, but they start from different states (PCL's prototypes take RNG draws) and their
    losses are different code: no fork across defenses."""
    softmax = cfg(["eval.robust_every=0", "adv_train.attack=none", "epochs=3"])
    assert shared_epochs(softmax, cfg([*SOURCE]), 10) == 0
