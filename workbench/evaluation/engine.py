"""The evaluation engine: run protocols of attack specs over a test set, without wasted work.

- Only samples the model classifies correctly are attacked (the others are not robust anyway).
- Attacks stop on a sample once it is fooled (their `early_stop`), so cost follows the robust samples.
- A sample fooled at some eps counts as fooled at every larger eps: the same perturbation lies
  inside the larger ball. So a sweep (eps values, or DeepFool's ratio d) runs in ascending
  order and each value attacks only the samples that survived the smaller ones ("carry", the
  default: strictly less work than separate runs), or as one batch holding every (value,
  sample) pair with one value per row ("joint": bigger batches for a GPU). Either way robust
  accuracy is monotone in eps by construction.
- With `cascade`, later specs of a protocol attack only what earlier ones left robust.
- Every accuracy comes with a 95% Wilson interval; the worst case across attacks ("any attack
  succeeded") is reported per protocol and overall.

Transfer (black-box) evaluation crafts on `craft_model` and checks the evaluated model.

Progress: `on_progress` receives a `workbench.progress.EvalProgress` when a spec starts, on every
step of the attack on a chunk (the attack's `on_step`: host-side counts, no device sync), and when a
chunk, a pass (one sweep value, or a joint pass over all) and the spec end. Per (spec, value), the
attack's per-stage stats (seconds, rows attacked, rows broken; one stage for a single attack, four
for AutoAttack) are summed over chunks into `SpecOutcome.stage_stats` and the rows' "stages".

`precision` (autocast dtype, channels-last) applies to every model call: the clean predictions, every
attack a protocol builds, and the transfer checks. The default is float32: a robustness number should
not depend on reduced precision unless it was asked for.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from attacks.base import AttackResult, StageStats, StepProgress, model_mode

from ..accel import FLOAT32, Precision
from ..attacks_util import iterate_batches
from ..progress.event import EvalProgress, ProgressHook
from .protocol import AttackSpec, Protocol
from ..stats import wilson_interval


def _as_float(xb: torch.Tensor) -> torch.Tensor:
    return torch.div(xb, 255.0) if xb.dtype == torch.uint8 else xb


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, precision: Precision = FLOAT32) -> torch.Tensor:
    with model_mode(model, False):
        dummy = torch.zeros(len(x), dtype=torch.long, device=x.device)
        return torch.cat([precision.forward(model, xb).argmax(1) for xb, _ in iterate_batches(x, dummy, batch_size)])


def _accumulate(into: list[StageStats], stats: list[StageStats]) -> None:
    """Add one call's per-stage stats to a (spec, value)'s running sums, matched by stage name."""
    for st in stats:
        mine = next((m for m in into if m.name == st.name), None)
        if mine is None:
            into.append(StageStats(st.name, st.seconds, st.attacked, st.broken))
        else:
            mine.seconds += st.seconds
            mine.attacked += st.attacked
            mine.broken += st.broken


def _split_by_value(res: AttackResult, vi: torch.Tensor, n_values: int) -> list[list[StageStats]]:
    """A joint chunk's per-stage stats, per sweep value: counts from the result's rows (stage k attacks the
    clean-correct rows no earlier stage broke), seconds shared in proportion to the rows each value had."""
    k = torch.arange(len(res.stage_stats), device=vi.device)
    stage = res.stage.to(vi.device)[:, None]
    clean = res.clean_correct.to(vi.device)[:, None]
    attacked = (clean & ((stage < 0) | (stage >= k))).long()
    broken = (clean & (stage == k)).long()
    per_value = torch.zeros(2, n_values, len(k), dtype=torch.long, device=vi.device)
    per_value[0].index_add_(0, vi, attacked)
    per_value[1].index_add_(0, vi, broken)
    att, brk = per_value.tolist()
    return [[StageStats(st.name, st.seconds * att[v][j] / st.attacked if st.attacked else 0.0, att[v][j], brk[v][j])
             for j, st in enumerate(res.stage_stats)] for v in range(n_values)]


@dataclass
class SpecOutcome:
    spec: AttackSpec
    protocol: str
    n: int  # evaluated on the first n samples
    values: list[float | None]  # sweep values (None: one unbounded run)
    fooled: torch.Tensor  # bool (V, n), monotone in the sweep value
    attacked: torch.Tensor  # bool (V, n): samples this spec actually attacked
    norm: torch.Tensor  # (V, n) perturbation size where fooled, nan elsewhere
    target_hit: torch.Tensor | None  # bool (V, n) in targeted mode
    stage_counts: list[dict[str, int]]
    seconds: float
    settings: dict[str, Any]
    cumulative: bool  # robust counts include earlier specs of a cascade
    examples: list[dict[str, torch.Tensor]] = field(default_factory=list)
    # Per value: the attack's stages summed over chunks (in a carry sweep, a value's stages attack only
    # what survived the smaller values).
    stage_stats: list[list[StageStats]] = field(default_factory=list)


@dataclass
class _SpecState:
    """What a spec has found so far; the journal saves it after every pass (examples are not saved)."""

    fooled: torch.Tensor
    norm: torch.Tensor
    target_hit: torch.Tensor | None
    stage_counts: list[dict[str, int]]
    stage_stats: list[list[StageStats]]
    examples: list[dict[str, torch.Tensor]] = field(default_factory=list)
    chunk_no: int = 0  # chunks attacked so far: each chunk's attack seed derives from its number
    passes_done: int = 0
    seconds: float = 0.0  # spent before a resume

    @classmethod
    def fresh(cls, V: int, n: int, device, targeted: bool, stages: list[str]) -> "_SpecState":
        return cls(torch.zeros(V, n, dtype=torch.bool, device=device), torch.full((V, n), float("nan"), device=device),
                   torch.zeros(V, n, dtype=torch.bool, device=device) if targeted else None,
                   [{} for _ in range(V)], [[StageStats(name, 0.0, 0, 0) for name in stages] for _ in range(V)])

    def to_saved(self, seconds: float) -> dict[str, Any]:
        return {"fooled": self.fooled.cpu(), "norm": self.norm.cpu(),
                "target_hit": None if self.target_hit is None else self.target_hit.cpu(),
                "stage_counts": self.stage_counts, "chunk_no": self.chunk_no, "passes_done": self.passes_done,
                "seconds": self.seconds + seconds,
                "stage_stats": [[[s.name, s.seconds, s.attacked, s.broken] for s in per] for per in self.stage_stats]}

    def restore(self, saved: dict[str, Any], device) -> None:
        if tuple(saved["fooled"].shape) != tuple(self.fooled.shape):
            return  # another spec's shape: not this one's journal entry
        self.fooled, self.norm = saved["fooled"].to(device), saved["norm"].to(device)
        if saved["target_hit"] is not None and self.target_hit is not None:
            self.target_hit = saved["target_hit"].to(device)
        self.stage_counts = [dict(c) for c in saved["stage_counts"]]
        self.stage_stats = [[StageStats(*s) for s in per] for per in saved["stage_stats"]]
        self.chunk_no, self.passes_done, self.seconds = saved["chunk_no"], saved["passes_done"], saved["seconds"]


class Evaluator:
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
                 seed: int = 0, craft_model: nn.Module | None = None, targeted: bool = False,
                 save_examples: int = 0, on_progress: ProgressHook | None = None, sweep: str = "carry",
                 precision: Precision = FLOAT32, journal=None):
        if sweep not in ("carry", "joint"):
            raise ValueError("sweep must be 'carry' or 'joint'")
        self.sweep = sweep
        self.precision = precision
        # An EvalJournal: resume finished passes, save new ones (see journal.py). Not with examples: they are
        # not journalled, so a resumed pass would leave its value without any.
        self.journal = journal if not save_examples else None
        self.model = model
        self.craft_model = craft_model or model
        self.transfer = craft_model is not None
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.targeted = targeted
        self.save_examples = save_examples
        self.on_progress = on_progress
        self.spec_count = 0  # specs in the run, for progress events (0: unknown); `evaluate` sets it
        self.specs_started = 0  # the next spec's position in the run
        self.device = y.device
        t0 = time.perf_counter()
        self.clean_pred = predict(model, x, batch_size, precision)
        self.clean_seconds = time.perf_counter() - t0
        self.clean_correct = self.clean_pred == y
        self.num_classes = None
        self.targets = None
        if targeted:
            gen = torch.Generator(device="cpu").manual_seed(seed + 7)
            with torch.no_grad():
                k = int(model(_as_float(x[:1])).shape[1])
            shift = torch.randint(1, k, (len(y),), generator=gen).to(self.device)
            self.targets = (y + shift) % k  # a random class other than the label

    # -- one spec -------------------------------------------------------------------------------
    def run_spec(self, spec: AttackSpec, protocol: str, alive: dict | None = None,
                 key: str | None = None) -> SpecOutcome:
        """Attack with one spec; with a journal and a `key`, resume its finished passes and save each new one."""
        n = len(self.y) if spec.max_samples is None else min(spec.max_samples, len(self.y))
        values: list[float | None] = list(spec.sweep) if spec.sweep is not None else [None]
        V = len(values)
        dev = self.device
        cand = self.clean_correct[:n].expand(V, n).clone()
        if alive is not None:
            for i, v in enumerate(values):
                if (spec.norm, v) in alive:
                    cand[i] &= alive[(spec.norm, v)][:n]
        # Reported settings: the attack at one scalar value, with the sweep and any step expression restored.
        reference = spec.build(self.craft_model, values[0], **self._overrides(spec, 0))
        settings = reference.settings()
        if isinstance(spec.params.get("step_size"), str):
            settings["step_size"] = spec.params["step_size"]
        st = _SpecState.fresh(V, n, dev, self.targeted, reference.stages())
        journal = self.journal if key is not None else None
        saved = journal.get(key) if journal is not None else None
        if saved is not None:
            st.restore(saved, dev)
        # carry: one pass per value, ascending, each attacking only what survived the smaller values;
        # joint: one pass holding every (value, sample) pair, one value per row.
        carry = self.sweep == "carry" and spec.monotone and V > 1
        passes = list(range(V)) if carry else [None]
        total = int(cand.sum())
        spec_ev = EvalProgress("spec_start", spec.label, protocol, self.specs_started, self.spec_count,
                               spec.sweep_param if values[0] is not None else None, values[0] if V == 1 else None,
                               0 if V == 1 else None, V, total=total)
        self.specs_started += 1
        self._emit(spec_ev)
        t0 = time.perf_counter()
        done = 0
        for p, stage in enumerate(passes):
            if p < st.passes_done:  # finished before an interruption (the journal has it)
                done += int(cand[stage].sum()) if stage is not None else total
                continue
            done, pass_end = self._run_pass(spec, values, cand, stage, st, spec_ev, done)
            st.passes_done = p + 1
            if journal is not None:  # saved before it is reported done: what progress shows is on disk
                journal.save(key, st.to_saved(time.perf_counter() - t0))
            self._emit(pass_end)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = st.seconds + time.perf_counter() - t0
        self._emit(replace(spec_ev, kind="spec_end", done=total))

        fooled, norm = st.fooled, st.norm
        if spec.sweep is not None and V > 1 and spec.monotone:
            # Fooled at a smaller value => fooled at every larger one, by the same perturbation.
            for i in range(1, V):
                carried = fooled[i - 1] & ~fooled[i]
                fooled[i] |= carried
                norm[i] = torch.where(carried, norm[i - 1], norm[i])
        if spec.sweep_param and spec.sweep is not None:
            settings[spec.sweep_param] = list(spec.sweep)
        settings["seed"] = int(spec.params.get("seed", self.seed))
        return SpecOutcome(spec, protocol, n, values, fooled, cand, norm, st.target_hit, st.stage_counts, seconds,
                           settings, cumulative=alive is not None, examples=st.examples, stage_stats=st.stage_stats)

    def _run_pass(self, spec: AttackSpec, values: list, cand: torch.Tensor, stage: int | None, st: "_SpecState",
                  spec_ev: EvalProgress, done: int) -> tuple[int, EvalProgress]:
        """One pass of a spec (one sweep value of a carried sweep, or every value at once); returns `done` and
        the pass's end event, for the caller to emit once the pass is saved."""
        V = len(values)
        chunk = max(1, self.batch_size)
        value_t = torch.tensor([0.0 if v is None else v for v in values], device=self.device)
        if stage is None:
            v_idx, s_idx = cand.nonzero(as_tuple=True)
            order = torch.argsort(s_idx, stable=True)  # a sample's values travel in the same chunk
            v_idx, s_idx = v_idx[order], s_idx[order]
            pass_ev = replace(spec_ev, attacked=int(cand.sum()))
        else:
            todo = cand[stage] & ~st.fooled[:stage].any(0)
            s_idx = todo.nonzero().squeeze(1)
            v_idx = torch.full_like(s_idx, stage)
            done += int((cand[stage] & ~todo).sum())  # carried over: fooled at a smaller value
            pass_ev = replace(spec_ev, value=values[stage], value_index=stage, attacked=int(cand[stage].sum()))
        rows = int(s_idx.numel())
        robust = rows  # of this pass's pairs, those not fooled yet (the ones still to attack count)
        pass_ev = replace(pass_ev, chunks=math.ceil(rows / chunk))
        for c, lo in enumerate(range(0, rows, chunk)):
            vi, si = v_idx[lo:lo + chunk], s_idx[lo:lo + chunk]
            ev = replace(pass_ev, kind="step", chunk=c, rows=int(si.numel()), done=done, robust=robust)
            robust -= self._attack_chunk(spec, values, value_t, vi, si, st.chunk_no, st.fooled, st.norm,
                                         st.target_hit, st.stage_counts, st.examples, st.stage_stats, ev)
            st.chunk_no += 1
            done += int(si.numel())
            self._emit(replace(ev, kind="chunk_end", done=done, robust=robust))
        if stage is not None and stage + 1 < V:  # carry: fooled here => fooled at every larger value
            nxt = st.fooled[stage] & ~st.fooled[stage + 1]
            st.fooled[stage + 1] |= nxt
            st.norm[stage + 1] = torch.where(nxt, st.norm[stage], st.norm[stage + 1])
        return done, replace(pass_ev, kind="pass_end", rows=0, done=done, robust=robust)

    def _emit(self, event: EvalProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def _step_hook(self, ev: EvalProgress):
        """The attack's `on_step` for one chunk: its step, placed in the spec, pass and chunk of `ev`."""
        emit = self.on_progress

        def hook(p: StepProgress) -> None:
            live = p.robust if p.robust is not None else p.active  # rows of the chunk not fooled yet
            emit(replace(ev, stage=p.stage, stage_index=p.stage_index, stages=p.stages, step=p.done, steps=p.total,
                         robust=ev.robust - max(0, p.batch - live)))
        return hook

    def _overrides(self, spec: AttackSpec, chunk_no: int) -> dict[str, Any]:
        """What the evaluation sets on every attack: a seed per chunk, transfer and targeted modes, precision."""
        overrides: dict[str, Any] = {"seed": int(spec.params.get("seed", self.seed)) + 1_000_003 * chunk_no}
        if self.precision != FLOAT32:
            overrides["precision"] = self.precision
        if self.transfer:
            overrides["early_stop"] = False  # fooling the source is not the goal; use the full budget
        if self.targeted and spec.cls.targeted_capable and spec.params.get("target_mode") is None:
            overrides["targeted"] = True
        return overrides

    def _attack_chunk(self, spec, values, value_t, vi, si, chunk_no, fooled, norm, target_hit, stage_counts,
                      examples, stage_stats, ev: EvalProgress) -> int:
        """Attack one chunk and record what it did; returns the number of its pairs fooled."""
        xb, yb = _as_float(self.x[si]), self.y[si]
        tb = self.targets[si] if self.targets is not None else None
        value = None if values[0] is None else value_t[vi]
        attack = spec.build(self.craft_model, value, **self._overrides(spec, chunk_no))
        if self.on_progress is not None:
            attack.on_step = self._step_hook(ev)
        res = attack.run(xb, yb, tb if attack.targeted else None)
        if ev.value_index is not None:  # one value in the chunk
            _accumulate(stage_stats[ev.value_index], res.stage_stats)
        else:
            for into, stats in zip(stage_stats, _split_by_value(res, vi, len(values))):
                _accumulate(into, stats)
        if self.transfer:
            adv_pred = predict(self.model, res.x_adv, self.batch_size, self.precision)
            hit = adv_pred != yb
            tgt = (adv_pred == tb) if tb is not None else None
        else:
            hit = ~res.adv_correct
            tgt = res.success if (tb is not None and attack.targeted) else None
        fooled[vi, si] = hit
        norm[vi, si] = torch.where(hit, res.norm.to(norm.dtype), torch.nan)
        if target_hit is not None and tgt is not None:
            target_hit[vi, si] = tgt
        if res.stages and len(res.stages) > 1:
            names = res.succeeded_by()
            for i, name, h in zip(vi.tolist(), names, hit.tolist()):
                if h and name is not None:
                    stage_counts[i][name] = stage_counts[i].get(name, 0) + 1
        if self.save_examples:
            self._keep_examples(examples, vi, si, xb, res.x_adv, yb, hit)
        return int(hit.sum())

    def _keep_examples(self, examples, vi, si, xb, x_adv, yb, hit) -> None:
        """Keep up to `save_examples` fooled and as many robust pairs per sweep value: the first of each kind in
        sample order (chunks come in sample order, so first come is first kept). Keeping the first N whatever
        the outcome left a robust model's file without a single fooled sample, the informative ones.
        In a carry sweep a value's pass attacks only what survived the smaller values, so its fooled
        examples are the ones it newly fooled."""
        taken = Counter((ex["value_index"], ex["fooled"]) for ex in examples)
        rows = []
        for j, key in enumerate(zip(vi.tolist(), hit.tolist())):
            if taken[key] < self.save_examples:
                taken[key] += 1
                rows.append(j)
        if not rows:
            return
        idx = torch.tensor(rows, device=xb.device)
        with torch.no_grad():  # only the kept rows: after the first chunks most chunks keep none
            p_clean = self.precision.forward(self.model, xb[idx]).softmax(1).cpu()
            p_adv = self.precision.forward(self.model, x_adv[idx]).softmax(1).cpu()
        for k, j in enumerate(rows):
            examples.append({
                "value_index": int(vi[j]), "sample": int(si[j]), "label": int(yb[j]), "fooled": bool(hit[j]),
                "clean": xb[j].cpu(), "adversarial": x_adv[j].detach().cpu(),
                "clean_pred": int(p_clean[k].argmax()), "clean_conf": float(p_clean[k].max()),
                "adv_pred": int(p_adv[k].argmax()), "adv_conf": float(p_adv[k].max()),
            })

    # -- protocols ------------------------------------------------------------------------------
    def run_protocol(self, protocol: Protocol) -> list[SpecOutcome]:
        alive: dict | None = {} if protocol.cascade else None
        outcomes = []
        for i, spec in enumerate(protocol.specs):
            out = self.run_spec(spec, protocol.name, alive, key=f"{protocol.name}/{i}/{spec.label}")
            if alive is not None:
                for i, v in enumerate(out.values):
                    key = (spec.norm, v)
                    prev = alive.get(key, torch.ones(len(self.y), dtype=torch.bool, device=self.device))
                    prev = prev.clone()
                    prev[:out.n] &= ~out.fooled[i]
                    alive[key] = prev
            outcomes.append(out)
        return outcomes


# -- summaries ------------------------------------------------------------------------------------
def _acc(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else 0.0, "ci95": [lo, hi], "correct": k, "n": n}


def spec_rows(ev: Evaluator, out: SpecOutcome) -> list[dict[str, Any]]:
    rows = []
    clean = ev.clean_correct[:out.n]
    for i, v in enumerate(out.values):
        # `attacked` is clean-correct (and, in a cascade, robust to every earlier spec).
        robust = out.attacked[i] & ~out.fooled[i]
        attacked = int(out.attacked[i].sum())
        fooled = out.fooled[i] & clean
        # An attack stopped at first success (C&W's first_success) found some adversarial example, not the
        # smallest: its norms say nothing about the minimum norm, so neither a mean nor threshold rows.
        first_found = bool((out.settings or {}).get("first_success"))
        norms = out.norm[i][fooled] if not first_found else out.norm[i][:0]
        acc = _acc(int(robust.sum()), out.n)
        row = {
            "protocol": out.protocol, "attack": out.spec.attack, "label": out.spec.label, "norm": out.spec.norm,
            "sweep_param": out.spec.sweep_param, "eps": v if out.spec.sweep_param == "eps" else None,
            "value": v, "n": out.n, "attacked": attacked,
            "robust_accuracy": acc["accuracy"], "ci95": acc["ci95"],
            "success_rate": int((out.fooled[i] & out.attacked[i]).sum()) / max(attacked, 1),
            "mean_norm": float(norms.mean()) if norms.numel() else None,
            "seconds": out.seconds, "cumulative": out.cumulative, "settings": out.settings,
        }
        if out.spec.attack == "deepfool" or out.spec.sweep_param == "max_ratio":
            x_norm = _as_float(ev.x[:out.n]).flatten(1).norm(dim=1).to(norms.dtype)
            ratio = out.norm[i][fooled] / x_norm[fooled].clamp_min(1e-12)
            row["mean_ratio"] = float(ratio.mean()) if ratio.numel() else None  # the CCN paper's rho_adv
        if out.target_hit is not None:
            row["target_hit_rate"] = int(out.target_hit[i].sum()) / max(attacked, 1)
        if out.stage_counts[i]:
            row["broken_by"] = out.stage_counts[i]
        if out.stage_stats:
            row["stages"] = [{"name": st.name, "seconds": st.seconds, "attacked": st.attacked, "broken": st.broken}
                             for st in out.stage_stats[i]]
        rows.append(row)
        if v is None and out.spec.thresholds and not first_found:
            for t in sorted(out.spec.thresholds):
                within = out.fooled[i] & (out.norm[i] <= t)
                acc_t = _acc(int((clean & ~within).sum()), out.n)
                rows.append({**row, "eps": t, "value": t, "robust_accuracy": acc_t["accuracy"],
                             "ci95": acc_t["ci95"], "success_rate": int(within.sum()) / max(int(clean.sum()), 1),
                             "threshold_of_minimum_norm": True})
    return rows


def worst_case_rows(ev: Evaluator, outcomes: list[SpecOutcome], protocol: str) -> list[dict[str, Any]]:
    """Per (norm, eps): robust only if no eps-bounded attack run at that eps fooled the sample."""
    groups: dict[tuple[str, float], list[tuple[SpecOutcome, int]]] = {}
    for out in outcomes:
        if out.spec.sweep_param != "eps" or out.spec.sweep is None:
            continue
        for i, v in enumerate(out.values):
            groups.setdefault((out.spec.norm, v), []).append((out, i))
    rows = []
    for (norm_name, eps), members in sorted(groups.items()):
        n = min(o.n for o, _ in members)
        robust = ev.clean_correct[:n].clone()
        for o, i in members:
            robust &= ~o.fooled[i][:n]
        acc = _acc(int(robust.sum()), n)
        rows.append({"protocol": protocol, "norm": norm_name, "eps": eps, "n": n,
                     "robust_accuracy": acc["accuracy"], "ci95": acc["ci95"],
                     "attacks": sorted({o.spec.label for o, _ in members})})
    return rows


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, protocols: list[Protocol],
             **kwargs) -> tuple[dict[str, Any], list[SpecOutcome]]:
    """Run every protocol; return the report (plain data) and the raw per-spec outcomes."""
    ev = Evaluator(model, x, y, **kwargs)
    ev.spec_count = sum(len(p.specs) for p in protocols)
    outcomes: list[SpecOutcome] = []
    results: list[dict[str, Any]] = []
    worst: list[dict[str, Any]] = []
    summaries = []
    for protocol in protocols:
        outs = ev.run_protocol(protocol)
        outcomes += outs
        for out in outs:
            results += spec_rows(ev, out)
        worst += worst_case_rows(ev, outs, protocol.name)
        summaries.append({"name": protocol.name, "description": protocol.description, "cascade": protocol.cascade,
                          "attacks": [s.label for s in protocol.specs]})
    if len(protocols) > 1:
        worst += worst_case_rows(ev, outcomes, "all")
    clean = _acc(int(ev.clean_correct.sum()), len(y))
    report = {
        "n": len(y), "clean_accuracy": clean["accuracy"], "clean_ci95": clean["ci95"],
        "clean_seconds": ev.clean_seconds, "protocols": summaries, "results": results, "worst_case": worst,
        "targeted": ev.targeted, "transfer": ev.transfer,
    }
    return report, outcomes
