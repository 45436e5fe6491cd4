"""`--save-examples N`: per attack and eps, up to N fooled and N robust pairs, the first of each kind in sample
order, on a real model; the file stays tensors only and the gallery still reads version 1 files."""

from __future__ import annotations

import pytest
import torch

from workbench import load_data, load_model
from workbench.evaluation import AttackSpec, Evaluator, Protocol, evaluate
from workbench.evaluation.attack_eval import examples_payload, save_evaluation
from workbench.tui.model.examples_view import load_examples

N = 2


@pytest.fixture(scope="module")
def setup(quickstart_run):
    model = load_model(quickstart_run.best)
    x, y = load_data("digits", "test")
    return model, x[:240], y[:240]


def _first(mask: torch.Tensor, k: int) -> list[int]:
    return mask.nonzero().squeeze(1)[:k].tolist()


def _expected(out) -> dict[int, tuple[list[int], list[int]]]:
    """Per value index of a carried sweep: (first N fooled, first N robust) among the pairs its pass attacked,
    which are what the smaller values left robust."""
    expected = {}
    for i in range(len(out.values)):
        attacked, fooled = out.attacked[i].clone(), out.fooled[i].clone()
        if i:
            attacked &= ~out.fooled[i - 1]
            fooled &= ~out.fooled[i - 1]
        expected[i] = (_first(fooled & attacked, N), _first(attacked & ~out.fooled[i], N))
    return expected


def _kept(out) -> dict[int, tuple[list[int], list[int]]]:
    """Per value index: (fooled, robust) samples kept, in the order kept."""
    kept: dict[int, tuple[list[int], list[int]]] = {i: ([], []) for i in range(len(out.values))}
    for ex in out.examples:
        fooled, robust = kept[ex["value_index"]]
        (fooled if ex["fooled"] else robust).append(ex["sample"])
        assert ex["fooled"] == (ex["adv_pred"] != ex["label"])  # the engine's verdict is what the gallery shows
    return kept


# A weak attack: few samples fooled, so the first N attacked are almost all robust.
WEAK = Protocol("custom", [AttackSpec("fgsm", {}, [0.03, 0.08], "FGSM")])


def test_fooled_and_robust_examples_per_eps_first_in_sample_order(setup):
    model, x, y = setup
    _, outcomes = evaluate(model, x, y, [WEAK], batch_size=64, save_examples=N)
    out = outcomes[0]
    kept = _kept(out)
    assert kept == _expected(out)
    assert all(len(f) <= N and len(r) <= N for f, r in kept.values())
    assert all(f for f, _ in kept.values()), "the attack fools samples at every eps"
    # The point: fooled samples that the first N attacked pairs (what was kept before) would have missed.
    first_attacked = set(_first(out.attacked[0], N))
    assert any(s not in first_attacked for s in kept[0][0])


def test_a_joint_sweep_keeps_as_many_of_each_kind(setup):
    """One pass over every (eps, sample) pair: chunks mix the values, each value still keeps its own."""
    model, x, y = setup
    _, outcomes = evaluate(model, x, y, [WEAK], batch_size=64, save_examples=N, sweep="joint")
    out = outcomes[0]
    kept = _kept(out)
    assert kept[0] == _expected(out)[0]  # the smallest value carries nothing: as in a carried sweep
    for i, (fooled, robust) in kept.items():
        assert 0 < len(fooled) <= N and 0 < len(robust) <= N
        assert fooled == sorted(fooled) and robust == sorted(robust)  # first come, in sample order
        assert all(out.fooled[i, s] for s in fooled)


def test_saved_file_is_tensors_only_version_2_and_the_gallery_reads_it(setup, tmp_path):
    model, x, y = setup
    protocol = Protocol("custom", [AttackSpec("pgd", {"steps": 5}, [0.05, 0.1], "PGD")])
    report, outcomes = evaluate(model, x, y, [protocol], batch_size=100, save_examples=N)
    report["checkpoint"] = str(tmp_path / "checkpoints" / "best.pt")
    save_evaluation(report, outcomes)
    path = next((tmp_path / "evals").glob("*-examples.pt"))
    payload = torch.load(path, weights_only=True)
    assert (payload["format"], payload["version"]) == ("workbench-examples", 2)
    assert len(payload["examples"]) == len(examples_payload(outcomes)["examples"])
    per_kind: dict[tuple, int] = {}
    for item in payload["examples"]:
        key = (item["value"], item["fooled"])
        per_kind[key] = per_kind.get(key, 0) + 1
        assert item["norm"] == "linf"
    assert max(per_kind.values()) <= N and any(fooled for _, fooled in per_kind)
    examples = load_examples(path)
    assert len(examples) == len(payload["examples"]) and {e.norm for e in examples} == {"linf"}
    assert [e.fooled for e in examples] == [i["fooled"] for i in payload["examples"]]


def test_a_newer_examples_file_is_refused(tmp_path):
    path = tmp_path / "x-examples.pt"
    torch.save({"format": "workbench-examples", "version": 99, "examples": []}, path)
    with pytest.raises(ValueError, match="version 99"):
        load_examples(path)


def test_examples_turn_the_journal_off(setup, tmp_path):
    """Examples are not journalled: a resumed pass would leave its value without any, so no journal."""
    from workbench.evaluation.journal import EvalJournal

    model, x, y = setup
    journal = EvalJournal(tmp_path / "j.pt", {"id": 1})
    assert Evaluator(model, x[:8], y[:8], save_examples=1, journal=journal).journal is None
    assert Evaluator(model, x[:8], y[:8], journal=journal).journal is journal
