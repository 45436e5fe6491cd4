"""Progress rendering (no torch): the event's estimate, plain lines per stage, and the live line's rate limit."""

from __future__ import annotations

import time
from dataclasses import replace

from workbench.progress import EvalProgress, LiveLine, PlainLines, ProgressClock, describe, eta_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingScreen:
    def __init__(self) -> None:
        self.draws: list[tuple[str, float]] = []
        self.printed: list[str] = []
        self.closed = False

    def update(self, text: str, fraction: float, times: str = "") -> None:
        self.draws.append((f"{text} · {times}", fraction))

    def print(self, line: str) -> None:
        self.printed.append(line)

    def close(self) -> None:
        self.closed = True


STAGES = ("apgd_ce", "apgd_t", "fab_t", "square")


def autoattack_events(steps: int = 50, chunks: int = 1, rows: int = 40) -> list[EvalProgress]:
    """What the engine emits for AutoAttack at one eps: start, every step of every stage, chunk and pass ends."""
    start = EvalProgress("spec_start", "AutoAttack", "custom", 0, 1, "eps", 0.1, 0, 1, total=rows * chunks)
    events = [start]
    robust = rows * chunks
    for c in range(chunks):
        base = replace(start, kind="step", chunks=chunks, chunk=c, rows=rows, done=c * rows, attacked=rows * chunks)
        for i, stage in enumerate(STAGES):
            for k in range(steps):
                events.append(replace(base, stage=stage, stage_index=i, stages=4, step=k, steps=steps,
                                      robust=robust - i))
        robust -= 4
        events.append(replace(base, kind="chunk_end", done=(c + 1) * rows, robust=robust))
    events.append(replace(start, kind="pass_end", chunks=chunks, done=rows * chunks, attacked=rows * chunks,
                          robust=robust))
    events.append(replace(start, kind="spec_end", done=rows * chunks))
    return events


def test_fraction_grows_with_steps_stages_and_chunks():
    fractions = [e.fraction for e in autoattack_events(steps=5, chunks=2)]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    step = EvalProgress("step", "PGD", total=100, done=50, rows=50, steps=10, step=5)
    assert step.fraction == 0.75  # half done, and half of the running chunk's steps
    assert replace(step, specs=4, spec_index=1).run_fraction == (1 + 0.75) / 4
    assert step.run_fraction is None  # the run's size unknown


def test_eta_is_elapsed_scaled_by_the_share_left():
    assert eta_seconds(30.0, 0.25) == 90.0
    assert eta_seconds(30.0, 0.0) is None and eta_seconds(0.0, 0.5) is None
    clock = FakeClock()
    timer = ProgressClock(clock)
    start = EvalProgress("spec_start", "PGD", total=100)
    timer.observe(start)
    clock.now += 10
    halfway = replace(start, kind="chunk_end", done=50, rows=50)
    assert timer.eta(halfway, clock.now) == 10.0


def test_plain_lines_are_one_per_stage_not_per_step():
    lines: list[str] = []
    clock = FakeClock()
    plain = PlainLines(lines.append, clock=clock)
    for ev in autoattack_events(steps=200):
        clock.now += 0.01
        plain(ev)
    assert len(lines) == 6  # the start, four stages, the pass
    assert lines[0] == "[1/1] AutoAttack eps 0.1: start · 40 samples to attack"
    for line, stage in zip(lines[1:5], STAGES):
        assert f"· {stage} {STAGES.index(stage) + 1}/4 done · robust" in line
    assert lines[1].endswith("robust 39/40 · 2.0s")  # the next stage's first count, and 200 steps of 0.01 s
    assert lines[4].startswith("[1/1] AutoAttack eps 0.1 · square 4/4 done · robust 36/40")  # the chunk's exact end
    assert lines[5].startswith("[1/1] AutoAttack eps 0.1 done · robust 36/40 · 8.0s")


def test_plain_lines_name_the_chunk_when_there_are_several():
    lines: list[str] = []
    plain = PlainLines(lines.append, clock=FakeClock())
    for ev in autoattack_events(steps=3, chunks=2):
        plain(ev)
    assert len(lines) == 1 + 2 * 4 + 1
    assert "chunk 2/2" in lines[5] and "apgd_ce 1/4" in lines[5]


def test_live_line_redraws_at_most_every_interval_however_fast_events_come():
    clock, screen = FakeClock(), CountingScreen()
    live = LiveLine(screen, clock=clock, min_interval=0.25, ticker=False)
    events = autoattack_events(steps=2500)  # 10,000 steps
    for ev in events:
        clock.now += 0.0001  # 10,000 events a second, one simulated second in all
        live(ev)
    seconds = 0.0001 * len(events)
    assert len(screen.draws) <= seconds / 0.25 + 1
    assert len(screen.printed) == 6  # the plain lines, above the live line
    live.close()
    assert screen.closed


def test_live_line_moves_on_while_no_event_comes():
    clock, screen = FakeClock(), CountingScreen()
    live = LiveLine(screen, clock=clock, min_interval=0.25, ticker=False)
    live(EvalProgress("spec_start", "Square", total=10))
    live(EvalProgress("step", "Square", total=10, rows=10, stage="square", steps=5000, step=1000, robust=8,
                      attacked=10))
    assert len(screen.draws) == 1  # the second came too soon after the first
    live.tick()
    assert len(screen.draws) == 1
    for _ in range(3):  # a long step: the ticker redraws with the time moving on
        clock.now += 2.0
        live.tick()
    assert len(screen.draws) == 4
    assert screen.draws[-1][0] == "Square · square step 1000/5000 · robust 8/10 · 6.0s eta 24s"
    live.close()


def test_live_line_ticker_thread_redraws_and_stops():
    screen = CountingScreen()
    live = LiveLine(screen, min_interval=0.01)
    live(EvalProgress("step", "PGD", total=10, rows=10, stage="pgd", steps=100, step=1))
    deadline = time.monotonic() + 5
    while len(screen.draws) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    live.close()
    assert len(screen.draws) >= 3 and screen.closed
    live.close()  # twice is fine


def test_describe_and_reading_an_event_back():
    ev = EvalProgress("step", "PGD", "custom", 1, 3, "eps", 0.03, 1, 2, chunk=0, chunks=2, rows=500, done=0,
                      total=1000, stage="pgd", step=7, steps=40, robust=420, attacked=500)
    assert describe(ev, 65, 130) == ("[2/3] PGD eps 0.03 (2/2) · pgd step 7/40 · chunk 1/2 · robust 420/500 · 1m05s · "
                                     "eta 2m10s")
    assert EvalProgress.from_dict(ev.to_dict()) == ev
    odd = {**ev.to_dict(), "value": "big", "chunk": -1, "stage": 3, "robust": True, "extra": 1}
    back = EvalProgress.from_dict(odd)
    assert (back.value, back.chunk, back.stage, back.robust, back.label) == (None, 0, "", 0, "PGD")
    assert EvalProgress.from_dict({"kind": "nope", "label": "x"}) is None
    assert EvalProgress.from_dict(None) is None
    joint = EvalProgress("step", "PGD-20", sweep_param="eps", values=4, stage="pgd", steps=20)
    assert describe(joint).startswith("PGD-20 all 4 eps · pgd step 0/20")
    # a label that already names its sweep (the CCN preset's "DeepFool d") is not followed by the name again
    deepfool = EvalProgress("chunk_end", "DeepFool d", "paper:ccn", 1, 3, "max_ratio", 0.2, 1, 5)
    assert describe(deepfool).startswith("[2/3] DeepFool d 0.2 (2/5)")


def test_training_batch_bar_takes_each_epochs_own_length():
    """A CE warm-up on the whole split, then adversarial epochs on a subset (adv_train.train_subset):
    the batch bar's total follows the epoch, so it never shows 4/235 as the end of an epoch."""
    from io import StringIO

    from rich.console import Console

    from workbench.training.reporting import RichReporter

    out = StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=120))
    reporter.start(epochs=2, batches=235, epoch=0, batch=0)
    reporter.begin_epoch(0, 235)
    reporter.batch(0, 235)
    reporter.epoch({"epoch": 1, "train_loss": 0.1, "train_acc": 0.97, "test_clean_acc": 0.98, "lr": 1e-3,
                    "seconds": 3.0})
    reporter.begin_epoch(1, 4)
    bar = reporter.progress.tasks[1]
    assert (bar.total, bar.completed, bar.description) == (4, 0, "epoch 2")
    reporter.batch(1, 4)
    assert reporter.progress.tasks[1].finished
    reporter.close()
    assert "epoch 1/2" in out.getvalue()
