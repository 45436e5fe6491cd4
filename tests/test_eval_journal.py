"""A killed evaluation resumes from its journal and ends with exactly the report of an uninterrupted one."""

from __future__ import annotations

import pytest

from workbench.evaluation import AttackSpec, Protocol, evaluate_checkpoint


def protocols():
    return [Protocol("strong-ish", [
        AttackSpec("pgd", {"steps": 5, "random_start": True}, [0.05, 0.1, 0.2], "PGD-5"),
        AttackSpec("fgsm", {}, [0.05, 0.1, 0.2], "FGSM"),
        AttackSpec("apgd", {"steps": 5}, [0.05, 0.1, 0.2], "APGD-5"),
    ], cascade=True)]


class Stop(KeyboardInterrupt):
    pass


def stop_after(kind: str, count: int, seen: list):
    def hook(event):
        seen.append(event)
        if event.kind == kind and sum(e.kind == kind for e in seen) == count:
            raise Stop
    return hook


def rows(report):
    return [(r["protocol"], r["label"], r["value"], r["robust_accuracy"], r["attacked"]) for r in report["results"]], \
        [(w["protocol"], w["eps"], w["robust_accuracy"]) for w in report["worst_case"]]


def test_a_killed_evaluation_resumes_and_matches_an_uninterrupted_one(quickstart_run, tmp_path):
    whole, _ = evaluate_checkpoint(quickstart_run.best, protocols(), n=120, batch_size=50)
    journal = tmp_path / "eval.journal.pt"
    seen: list = []
    # killed in the second spec, after its first eps pass (the first spec and one pass are in the journal)
    with pytest.raises(Stop):
        evaluate_checkpoint(quickstart_run.best, protocols(), n=120, batch_size=50, journal=journal,
                            on_progress=stop_after("pass_end", 4, seen))
    assert journal.exists()
    again: list = []
    resumed, _ = evaluate_checkpoint(quickstart_run.best, protocols(), n=120, batch_size=50, journal=journal,
                                     on_progress=again.append)
    assert rows(resumed) == rows(whole)
    # only the passes not journaled were attacked again: 9 passes in all, 4 done before the kill
    assert sum(e.kind == "pass_end" for e in again) == 9 - 4


def test_a_journal_of_another_evaluation_is_ignored(quickstart_run, tmp_path):
    journal = tmp_path / "eval.journal.pt"
    with pytest.raises(Stop):
        evaluate_checkpoint(quickstart_run.best, protocols(), n=120, batch_size=50, journal=journal,
                            on_progress=stop_after("pass_end", 2, []))
    events: list = []
    other, _ = evaluate_checkpoint(quickstart_run.best, protocols(), n=100, batch_size=50, journal=journal,
                                   on_progress=events.append)  # other samples: nothing of it may be reused
    assert sum(e.kind == "pass_end" for e in events) == 9
    fresh, _ = evaluate_checkpoint(quickstart_run.best, protocols(), n=100, batch_size=50)
    assert rows(other) == rows(fresh)
    journal.write_bytes(b"not a journal")  # a torn file: started over, not an error
    garbled, _ = evaluate_checkpoint(quickstart_run.best, protocols(), n=100, batch_size=50, journal=journal)
    assert rows(garbled) == rows(fresh)
