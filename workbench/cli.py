"""The `workbench` command line: train, attack, runs, stop, profiles."""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich import box
from rich.table import Table
from typer.core import TyperCommand

from .allocator import keep_freed_memory
from .attack_meta import NORMS, SHARED_OPTIONS, parse_floats
from .errors import TrainingFailed, WorkbenchError
from .threads import apply_cpu_threads, explicit_threads

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train image classifiers with compactness defenses and probe checkpoints with adversarial attacks.",
)
out = Console()
err = Console(stderr=True)

DataRoot = typer.Option(None, "--data-root", help="Dataset folder (default: $WORKBENCH_DATA, else the user cache).")
Device = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")
Threads = typer.Option(None, "--threads", min=1,
                       help="CPU threads (default: $WORKBENCH_THREADS, else this process's share of the cores "
                            "beside the other workbench runs and attacks on them).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress on stderr (by default: a live line on a terminal, "
                                                 "one line per attack stage otherwise).")


def _note(line: Optional[str]) -> None:
    if line:
        err.print(line, highlight=False, soft_wrap=True)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


@app.command()
def train(
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Bundled profile name or path to a YAML file."),
    set_: List[str] = typer.Option([], "--set", help="Override a key: --set epochs=3 --set adv_train.eps=0.2"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder that holds run folders."),
    device: str = Device,
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    detach: bool = typer.Option(False, "--detach", help="Train in a background process; print the run folder and return."),
    devices: Optional[int] = typer.Option(
        None, "--devices", help="Data-parallel training on N devices (DDP via torchrun): N GPUs with --device "
                                "cuda, N processes with --device cpu (default: 1, or what a resumed run used)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto (bf16 on CUDA, off on CPU) | bf16 | "
                                                          "fp16 | off (sets performance.amp)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="NHWC memory layout (sets performance.channels_last)."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                            help="torch.compile the model, attacks included (sets performance.compile)."),
    cudnn_benchmark: Optional[bool] = typer.Option(None, "--cudnn-benchmark/--no-cudnn-benchmark",
                                                   help="cuDNN autotuning (sets performance.cudnn_benchmark)."),
    data_root: Optional[str] = DataRoot,
    threads: Optional[int] = Threads,
) -> None:
    """Train a model from a profile; prints its run folder first."""
    from .stop_request import StopRequest

    # Before torch is imported: a SIGTERM during set-up (seconds) becomes a clean 'stopped', not a kill.
    with StopRequest() as stop:
        _train(profile, set_, out_dir, device, resume, detach, devices, amp, channels_last, compile_,
               cudnn_benchmark, data_root, threads, stop)


def _train(profile, set_, out_dir, device, resume, detach, devices, amp, channels_last, compile_, cudnn_benchmark,
           data_root, threads, stop) -> None:
    speed = {"amp": amp, "channels_last": channels_last, "compile": compile_, "cudnn_benchmark": cudnn_benchmark}
    speed_sets = [f"performance.{k}={str(v).lower() if isinstance(v, bool) else v}"
                  for k, v in speed.items() if v is not None]
    if devices is not None and devices < 1:
        raise WorkbenchError(f"--devices must be >= 1, got {devices}")
    explicit_threads(threads)  # a bad WORKBENCH_THREADS fails before anything is created
    if resume is not None:
        if profile or set_ or speed_sets:
            raise WorkbenchError("--resume continues a run with its own config; do not combine it with --profile, "
                                 "--set or the speed options (--amp, --compile, ...)")
        run, devices = _reopen_run(resume, devices)
    else:
        if not profile:
            raise WorkbenchError("give --profile NAME_OR_PATH (see `workbench profiles`) or --resume RUN_DIR")
        devices = devices or 1
        run = _create_run(profile, [*set_, *speed_sets], out_dir, device, devices, data_root, stop)
    print(f"run: {run.root}", flush=True)
    if detach:
        from .runs import launch_detached

        args = ["--device", device, "--devices", str(devices)] + (["--data-root", data_root] if data_root else [])
        args += ["--threads", str(threads)] if threads else []
        pid = launch_detached(run, args)
        print(f"training in the background (pid {pid}); log: {run.log}", flush=True)
        return
    if devices > 1:
        if stop.requested:
            raise KeyboardInterrupt
        state = _train_distributed(run, devices, device, data_root)  # the launcher forwards signals itself
    else:
        state = _train_here(run, device, data_root, threads, stop)
    _report_training(run, state)


def _reopen_run(resume: Path, devices: Optional[int]):
    """The run to resume, and its device count (as asked, which later resumes then keep, else as saved)."""
    from .runs import open_run, read_json, write_json_atomic

    run = open_run(resume)
    meta = read_json(run.root / "run.json") or {}
    if devices is None:
        return run, int(meta.get("devices") or 1)
    if devices != meta.get("devices", 1):
        write_json_atomic(run.root / "run.json", {**meta, "devices": devices})
    return run, devices


def _create_run(profile: str, sets: list[str], out_dir: Path, device: str, devices: int, data_root, stop):
    """A new run folder for the profile; every check that can fail runs before it is created."""
    from .config import load_profile

    cfg, path = load_profile(profile, sets)
    # torch: only once the profile has parsed, so a typo fails fast.
    from .training import prepare_run
    from .training.trainer import resolve_device

    _check_devices(devices, resolve_device(device))  # fail on a bad device before creating anything
    late = [m for m in cfg.schedule.milestones if m >= cfg.epochs] if cfg.schedule.name == "multistep" else []
    if late:
        err.print(f"note: lr milestones {late} lie at or past the run's {cfg.epochs} epochs and never apply; "
                  "scale them with --set schedule.milestones=[...]", highlight=False)
    if stop.requested:  # interrupted before anything was created
        raise KeyboardInterrupt
    return prepare_run(cfg, out_dir, path, data_root=data_root, device=device, devices=devices)


def _train_here(run, device: str, data_root: Optional[str], threads: Optional[int], stop) -> str:
    """Train in this process, on this process's share of the CPU cores; the state it ended in."""
    from .runs import read_json
    from .training import run_training
    from .training.reporting import reporter_for
    from .training.trainer import resolve_device

    # "auto" defers to the device the run was created with (a resumed run keeps its device).
    run_device = (read_json(run.root / "run.json") or {}).get("device", "auto") if device == "auto" else device
    _note(apply_cpu_threads(threads, resolve_device(run_device)))
    return run_training(run.root, device=None if device == "auto" else device,
                        data_root=data_root, reporter=reporter_for(sys.stdout), stop=stop)


def _report_training(run, state: str) -> None:
    from .runs import Status

    status = Status.read(run.status)
    message = status.message if status else state
    if state == "failed":
        raise TrainingFailed(message)
    if state == "stopped":  # the resume state is last.pt (best.pt is the best model so far)
        print(f"{message}: workbench train --resume {run.root}", flush=True)
        print(f"stopped: resume state in {run.last}", flush=True)
        return
    print(f"{state}: checkpoint {run.best if run.best.exists() else run.last}", flush=True)


def _check_devices(devices: int, device) -> None:
    if devices > 1:
        from .training.distributed import check_devices

        check_devices(devices, device.type)


def _train_distributed(run, devices: int, device: str, data_root: Optional[str]) -> str:
    """torchrun with one worker per device, under this process's run lock; the state the workers left."""
    from .runs import Status, read_json
    from .training.distributed import launch
    from .training.session import run_lock
    from .training.trainer import resolve_device

    meta = read_json(run.root / "run.json") or {}
    dev = resolve_device(meta.get("device", "auto") if device == "auto" else device)
    _check_devices(devices, dev)
    with run_lock(run):
        before = Status.read(run.status)
        if before is not None and before.state == "finished" and run.last.exists():
            raise WorkbenchError(f"run {run.root} already finished its {before.epochs} epochs")
        code = launch(run.root, devices, dev.type, data_root or meta.get("data_root"))
    status = Status.read(run.status)
    if status is None or status.state in ("starting", "running"):
        # The workers died without recording why (killed, or torchrun failed to start them).
        failed = status or Status()
        failed.state, failed.message = "failed", f"distributed workers exited with code {code}; see the log above"
        failed.write(run.status)
        return "failed"
    return status.state


def _parse_eps(text: str) -> list[float]:
    return parse_floats(text, "--eps")


class _AttackCommand(TyperCommand):
    """`workbench attack`, where an attack's shorthand flag (`--pgd`) reads as `--attack pgd`.

    The flags are the attacks' own declarations, so the registry (and torch) is imported only when an
    argument is not one of the command's options."""

    def parse_args(self, ctx, args):
        own = {opt for p in self.get_params(ctx) for opt in (*p.opts, *p.secondary_opts)}
        if any(a.startswith("--") and a.split("=", 1)[0] not in own for a in args):
            args = _expand_attack_flags(list(args), own)
        return super().parse_args(ctx, args)


def _expand_attack_flags(args: list[str], own: set[str]) -> list[str]:
    from attacks import all_meta

    flags = {m.flag: m.name for m in all_meta() if m.flag}
    clash = sorted(own & set(flags))
    if clash:
        raise WorkbenchError(f"attack {flags[clash[0]]} declares flag {clash[0]}, an option of `workbench attack`")
    out = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        if arg.startswith("--") and arg not in flags and arg.split("=", 1)[0] not in own:
            raise WorkbenchError(f"no such option: {arg} (attack flags: {' '.join(sorted(flags))}; any attack: "
                                 "--attack NAME[:key=value,...], see `workbench attacks`)")
        out += ["--attack", flags[arg]] if arg in flags else [arg]
    return out


@dataclass(frozen=True)
class AttackSettings:
    """Every option of `workbench attack` as given (None: not given), in one object for `_attack`."""

    checkpoint: Path
    attacks: list[str]
    preset: Optional[str]
    strong_: Optional[bool]
    eps: Optional[str]
    norm: str
    steps: Optional[int]
    step_size: Optional[float]
    restarts: Optional[int]
    loss: Optional[str]
    c: Optional[float]
    kappa: Optional[float]
    lr: Optional[float]
    cw_steps: Optional[int]
    search_steps: Optional[int]
    queries: Optional[int]
    d: Optional[str]
    transfer_from: Optional[Path]
    adaptive: bool
    head: str
    targeted: bool
    save_examples: int
    n: Optional[int]
    batch_size: int
    seed: int
    amp: str
    channels_last: bool
    compile_: bool
    device: str
    data_root: Optional[str]
    as_json: bool
    threads: Optional[int]
    job_file: Optional[Path]
    quiet: bool


@app.command(cls=_AttackCommand, epilog="An attack's shorthand flag (--pgd, --fgsm, ...) is --attack NAME; "
                                        "`workbench attacks` lists every attack with its flag and parameters.")
def attack(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file, or a run folder (uses its best.pt)."),
    attacks: List[str] = typer.Option([], "--attack", metavar="NAME[:key=value,...]",
                                      help="Run this attack, e.g. pgd:steps=100,restarts=2 or autoattack:version=fast "
                                           "(repeatable; `workbench attacks` lists names and keys)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A paper's attack settings: pcl | pc | adr | ccn | strong."),
    strong_: Optional[bool] = typer.Option(None, "--strong/--no-strong",
                                           help="Also run the strong protocol (default: on with a paper --preset)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Comma-separated eps, e.g. 0.1,0.3 or 8/255 (default: per dataset)."),
    norm: str = typer.Option(NORMS[0], "--norm", help=f"{' | '.join(NORMS)}: the norm of eps (minimum-norm attacks "
                                                      "keep their own; `workbench attacks` lists each one's norms)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Iterations of the iterative attacks."),
    step_size: Optional[float] = typer.Option(None, "--step-size", help="Step of PGD/BIM/MIM (default per attack)."),
    restarts: Optional[int] = typer.Option(None, "--restarts", min=1, help="Random restarts (worst case per sample)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Attack loss: ce | cw | dlr (default ce)."),
    c: Optional[float] = typer.Option(None, "--c", help="C&W initial constant."),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="C&W confidence margin."),
    lr: Optional[float] = typer.Option(None, "--lr", help="C&W Adam learning rate."),
    cw_steps: Optional[int] = typer.Option(None, "--cw-steps", min=1, help="C&W / DeepFool iterations."),
    search_steps: Optional[int] = typer.Option(None, "--search-steps", min=1, help="C&W binary-search steps."),
    queries: Optional[int] = typer.Option(None, "--queries", min=1, help="Square query budget."),
    d: Optional[str] = typer.Option(None, "--d", help="DeepFool max residue ratios ||eta||/||x||, e.g. 0.1,0.2,0.3."),
    transfer_from: Optional[Path] = typer.Option(None, "--transfer-from",
                                                 help="Craft on this checkpoint, evaluate the target (black-box)."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Add attacks on the defense's own training loss."),
    head: str = typer.Option("softmax", "--head",
                             help="softmax | prototype: nearest class prototype of the last supervised feature (pcl, ds_*)."),
    targeted: bool = typer.Option(False, "--targeted", help="Targeted mode toward a random other class."),
    save_examples: int = typer.Option(0, "--save-examples", min=0, help="Save up to K fooled and K robust clean/adversarial pairs per attack and eps."),
    n: Optional[int] = typer.Option(None, "--n", help="Evaluate the first N test samples (default: all)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of the attacks' randomness."),
    amp: str = typer.Option("off", "--amp",
                            help="Mixed precision of the model's forward: auto | bf16 | fp16 | off (auto: bf16 on "
                                 "CUDA, off on CPU). Attacks keep x and their arithmetic in float32."),
    channels_last: bool = typer.Option(False, "--channels-last/--no-channels-last",
                                       help="Feed the model channels-last (NHWC) image batches."),
    compile_: bool = typer.Option(False, "--compile/--no-compile",
                                  help="Attack a torch.compile'd model (compiled once; the first batches pay for it)."),
    device: str = Device,
    data_root: Optional[str] = DataRoot,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    threads: Optional[int] = Threads,
    job_file: Optional[Path] = typer.Option(None, "--job-file", hidden=True,
                                            help="Report progress and the outcome to this file (the TUI's jobs)."),
    quiet: bool = Quiet,
) -> None:
    """Robust accuracy of a checkpoint under attacks and protocols; saved (JSON, CSV) to evals/ beside it."""
    settings = AttackSettings(**locals())  # first: exactly the options above (a missing field is a TypeError)
    from .progress import Hooks, open_display
    from .runs.evals import JobReporter

    if job_file is not None:
        # A cancel from the TUI is a SIGTERM: unwind as an interrupt, so the job records "cancelled".
        # Installed before the job file says "running": a job seen running unwinds on a cancel, never just dies.
        signal.signal(signal.SIGTERM, _raise_interrupt)
    job = JobReporter(job_file) if job_file is not None else None
    # On stderr, also with --json (stdout stays the report); _attack closes it before printing results.
    progress = Hooks(open_display(quiet), job.progress if job is not None else None)
    try:
        saved = _attack(settings, progress)
    except KeyboardInterrupt:
        if job is not None:
            job.cancel()  # a cancel (SIGTERM) or ^C: not a failure
        raise
    except Exception as exc:
        if job is None:
            raise
        # The log holds the reason before the job file says "failed": a UI that sees the state opens the
        # log at once. Then exit without a second report from main().
        progress.close()
        code = _report_error(exc)
        job.fail(_one_line(exc))
        raise SystemExit(code) from None
    except BaseException as exc:  # SystemExit and the like: nothing more to print
        if job is not None:
            job.fail(_one_line(exc))
        raise
    finally:
        progress.close()
    if job is not None:
        job.finish(saved)


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _raise_interrupt(signum, frame) -> None:
    # One cancel is enough: a second SIGTERM must not interrupt the unwinding that records it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _shared_options(s: AttackSettings) -> dict:
    """The shared options given (`--steps 20` -> {"steps": 20}), for the attacks' parameters that follow them."""
    shared = {name: getattr(s, name) for name in SHARED_OPTIONS if getattr(s, name) is not None}
    if "d" in shared:
        shared["d"] = parse_floats(shared["d"], "--d")
    return shared


@dataclass
class _AttackRequest:
    """The attack command's options, checked: what the evaluation needs beyond AttackSettings."""

    eps: list[float] | None
    shared: dict
    choices: list
    run_strong: bool
    device: object


def _check_attack_request(s: AttackSettings) -> _AttackRequest:
    """Every option checked before any checkpoint or data is read, so bad input fails before any work; the
    torch-free checks first, so most typos fail before torch is even imported."""
    from .attack_meta import DEFAULT_ATTACK, check_eps

    check_eps([], s.norm)  # the norm itself
    if s.head not in ("softmax", "prototype"):
        raise WorkbenchError(f"--head must be softmax or prototype, not {s.head!r}")
    if s.adaptive and s.transfer_from is not None:
        raise WorkbenchError("--adaptive attacks the target's own training objective; it cannot be crafted on "
                             "--transfer-from (drop one)")
    if s.head == "prototype" and s.adaptive:
        raise WorkbenchError("--adaptive attacks the training objective through the softmax model; drop --head prototype")
    eps_list = check_eps(parse_floats(s.eps, "--eps"), s.norm) if s.eps is not None else None
    shared = _shared_options(s)
    if s.step_size is not None and not s.step_size > 0:
        raise WorkbenchError("--step-size must be > 0")

    from attacks import ATTACK_LOSSES

    from .accel import AMP_CHOICES, resolve_amp
    from .evaluation import PRESETS, parse_choice
    from .evaluation.custom import check_norm
    from .training.trainer import resolve_device

    if s.loss is not None:
        ATTACK_LOSSES.get(s.loss)
    if s.preset is not None:
        PRESETS.get(s.preset)
    choices = [parse_choice(text) for text in s.attacks]
    if not choices and s.preset is None:
        choices = [parse_choice(DEFAULT_ATTACK)]
    for choice in choices:
        check_norm(choice, s.norm)
    run_strong = s.strong_ if s.strong_ is not None else (s.preset is not None and s.preset != "strong")
    dev = resolve_device(s.device)
    explicit_threads(s.threads)  # a bad WORKBENCH_THREADS
    if s.amp not in AMP_CHOICES:
        raise WorkbenchError(f"--amp must be {' | '.join(AMP_CHOICES)}, not {s.amp!r}")
    resolve_amp(s.amp, dev)  # bf16 on a GPU without it fails here, before any work
    return _AttackRequest(eps_list, shared, choices, run_strong, dev)


def _attack(s: AttackSettings, progress=None) -> Path:
    req = _check_attack_request(s)
    _note(apply_cpu_threads(s.threads, req.device))
    from .evaluation import AttackOptions, custom_protocol, evaluate_checkpoint, save_evaluation
    from .evaluation.request import requested_protocols

    def custom(eps_values):
        options = AttackOptions(eps=eps_values, norm=s.norm, shared=req.shared)
        return custom_protocol(req.choices, options) if req.choices else None

    def protocols_for(ckpt_data: dict) -> list:
        return requested_protocols(ckpt_data, preset=s.preset, eps=req.eps, norm=s.norm, strong=req.run_strong,
                                   adaptive=s.adaptive, custom=custom)

    try:
        report, outcomes = evaluate_checkpoint(
            s.checkpoint, protocols_for, n=s.n, batch_size=s.batch_size, data_root=s.data_root, device=req.device,
            seed=s.seed, transfer_from=s.transfer_from, targeted=s.targeted, save_examples=s.save_examples,
            on_progress=progress or None, head=s.head, amp=s.amp, channels_last=s.channels_last,
            compile=s.compile_)
    finally:
        if progress is not None:
            progress.close()  # the live line goes before the results are printed
    saved = save_evaluation(report, outcomes)
    report["saved_to"] = str(saved)
    if s.as_json:
        print(json.dumps(report))
    else:
        _print_attack_results(report, saved, weak_only=not req.run_strong and s.preset != "strong")
    return saved


def _print_attack_results(report: dict, saved: Path, weak_only: bool) -> None:
    from .evaluation.report import results_table, side_by_side_table

    out.print(results_table(report))
    side = side_by_side_table(report)
    if side is not None:
        out.print(side)
    if weak_only:
        out.print("[dim]strong protocol not run (add --strong): weak attacks overstate robustness[/dim]")
    out.print(f"saved: {saved} (+ .csv{', examples' if report.get('examples') else ''})")


@app.command()
def audit(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file, or a run folder (uses its best.pt)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Reference L-inf eps (default: the checkpoint's adv_train.eps, "
                                                          "else its eval.eps, else 0.3 MNIST-like, 8/255 colour)."),
    large_eps: Optional[float] = typer.Option(None, "--large-eps", help="Eps at which accuracy must reach ~0."),
    source: Optional[Path] = typer.Option(None, "--source", help="Independently trained model for the transfer check."),
    queries: int = typer.Option(1000, "--queries", min=1, help="Square query budget (the gradient-free check)."),
    n: int = typer.Option(500, "--n", min=1, help="Test samples to use."),
    batch_size: int = typer.Option(500, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = Device,
    data_root: Optional[str] = DataRoot,
    as_json: bool = typer.Option(False, "--json"),
    threads: Optional[int] = Threads,
    quiet: bool = Quiet,
) -> None:
    """Gradient-masking audit: pass / warn / inconclusive per check, with the numbers behind it."""
    from .data import load_raw
    from .evaluation import check_eps_list, check_linf_eps
    from .evaluation.attack_eval import evals_dir_for, load_checkpoint_model, reserve_name
    from .evaluation.audit import audit_model, choose_audit_eps
    from .runs import write_json_atomic
    from .training.trainer import resolve_device

    eps_value = None
    if eps is not None:
        values = check_eps_list(_parse_eps(eps))
        check_linf_eps(values)
        if len(values) != 1:
            raise WorkbenchError("--eps takes one value for the audit")
        if values[0] == 0:
            raise WorkbenchError("--eps must be > 0 for the audit (at 0 every attack is the clean model)")
        eps_value = values[0]
    if large_eps is not None:
        check_linf_eps(check_eps_list([large_eps]))
    dev = resolve_device(device)
    _note(apply_cpu_threads(threads, dev))
    ckpt, data, model = load_checkpoint_model(checkpoint, dev)
    source_model = load_checkpoint_model(source, dev)[2] if source is not None else None
    eps_value, eps_source = choose_audit_eps(data, data["dataset"], eps_value)
    if not as_json:
        err.print(f"audit eps {eps_value:g} (from {eps_source})")
    x, y = load_raw(data["dataset"], "test", root=data_root)
    x, y = x[:n].to(dev), y[:n].to(dev)
    from .progress import open_display

    display = open_display(quiet)  # on stderr, also with --json
    try:
        result = audit_model(model, x, y, dataset=data["dataset"], eps=eps_value, large_eps=large_eps,
                             queries=queries, source_model=source_model, batch_size=batch_size, seed=seed,
                             eps_source=eps_source, on_progress=display)
    finally:
        if display is not None:
            display.close()
    result["checkpoint"] = str(ckpt)
    folder = evals_dir_for(ckpt)
    folder.mkdir(parents=True, exist_ok=True)
    path = reserve_name(folder, f"audit-{ckpt.stem}-{time.strftime('%Y%m%d-%H%M%S')}", ".json")
    write_json_atomic(path, result)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"gradient-masking audit: {ckpt}\nn={result['n']}, clean {_pct(result['clean_accuracy'])}, "
                        f"eps {result['eps']:g}",
                  box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("check")
    table.add_column("result", no_wrap=True)
    table.add_column("numbers", overflow="fold")
    colours = {"pass": "green", "warn": "bold red", "inconclusive": "yellow", "skip": "dim"}
    for check in result["checks"]:
        table.add_row(check["name"], f"[{colours[check['status']]}]{check['status']}[/]", check["detail"])
    out.print(table)
    verdict_style = {"pass": "green", "warn": "bold red", "inconclusive": "bold yellow"}[result["verdict"]]
    out.print(f"[{verdict_style}]{result['verdict_detail']}[/]")
    out.print(f"saved: {path}")


WIDE_LISTING = 120  # below this many columns, `workbench attacks` prints a block per attack instead of a table
ATTACK_HINT = "run one with its flag or --attack NAME[:key=value,...]"


def _attack_kind(meta) -> str:
    return "eps-bounded" if meta.bounded else "minimum-norm"


def _param_texts(meta) -> list[str]:
    return [f"{p.name}={p.show()}" + (f" (--{p.option.replace('_', '-')})" if p.option else "") for p in meta.params]


def _attack_blocks(metas, width: int) -> list:
    """`workbench attacks` for a narrow terminal: per attack, a head line (name, flag, norms, kind) whole, then its
    description and parameters wrapped under it, never wider than `width`."""
    import textwrap

    from rich.text import Text

    indent = "    "
    lines = []
    for m in metas:
        lines.append(Text.assemble((m.name, "bold"), f"  {m.flag or '-'}  {', '.join(m.norms)}  {_attack_kind(m)}"))
        body = [m.summary, "parameters: " + (", ".join(_param_texts(m)) or "none")]
        for paragraph in body:
            lines += [Text(row, style="dim" if paragraph is not body[0] else "")
                      for row in textwrap.wrap(paragraph, width, initial_indent=indent, subsequent_indent=indent)]
    return lines + [Text(""), Text(ATTACK_HINT, style="italic")]


@app.command(name="attacks")
def list_attacks(as_json: bool = typer.Option(False, "--json", help="Print the attacks' metadata and the presets as "
                                                                    "one JSON object.")) -> None:
    """List the attacks (flag, norms, parameters with defaults) and the evaluation presets."""
    from rich.text import Text

    from attacks import all_meta

    from .evaluation import PRESETS, build_protocol

    metas = all_meta()
    protocols = {name: build_protocol(name, "mnist") for name in PRESETS.names()}
    if as_json:
        print(json.dumps({"attacks": [m.to_json() for m in metas],
                          "presets": {name: {"attacks": [s.label for s in p.specs], "description": p.description}
                                      for name, p in protocols.items()}}))
        return
    if out.width < WIDE_LISTING:
        for line in _attack_blocks(metas, out.width):
            out.print(line, no_wrap=True, overflow="ellipsis", highlight=False)
    else:
        table = Table(box=box.SIMPLE_HEAD, caption=ATTACK_HINT)
        for col in ("attack", "flag", "norms", "kind", "parameters (default)", "description"):
            table.add_column(col, overflow="fold")
        for m in metas:
            # Text, not markup: a plugin's strings are shown as written.
            table.add_row(*(Text(v) for v in (m.name, m.flag or "-", ", ".join(m.norms), _attack_kind(m),
                                               "\n".join(_param_texts(m)) or "none", m.summary)))
        out.print(table)
    presets = Table(box=box.SIMPLE_HEAD)
    for col in ("preset", "attacks (MNIST)", "description"):
        presets.add_column(col, overflow="fold")
    for name, proto in protocols.items():
        presets.add_row(name, ", ".join(s.label for s in proto.specs), proto.description)
    out.print(presets)


@app.command(name="defenses")
def list_defenses() -> None:
    """List the defenses with their hyperparameters and defaults (the profile's `defense:` block)."""
    from defenses import DEFENSES

    table = Table(box=box.SIMPLE_HEAD)
    for col in ("defense", "paper", "hyperparameters (default)"):
        table.add_column(col, overflow="fold")
    for name, cls in DEFENSES.items():
        params = [f"{key}={field.default!r}" + (f": {field.description}" if field.description else "")
                  for key, field in cls.Params.model_fields.items()]
        table.add_row(name, cls.paper, "\n".join(params) or "none")
    out.print(table)


def _runs_listing(summaries, width: int) -> list:
    """What `workbench runs` prints, at most `width` wide with every cell and header on one line (the run
    name is what users copy): the columns that matter first, then the setup as wide as the width allows
    (a caption says where the rest is); under a terminal too narrow even for that, a block per run."""
    from rich.measure import Measurement
    from rich.text import Text

    heads = (("run (name-started)", "left"), ("state", "left"), ("epoch", "right"), ("clean", "right"),
             ("robust", "right"))
    cells = [(s.name, s.state, f"{s.epoch}/{s.epochs}", _pct(s.best_clean), _pct(s.best_robust)) for s in summaries]
    setups = [f"{s.dataset}/{s.model}/{s.defense}" for s in summaries]
    choices = (("data/model/defense", setups, None),
               ("defense", [s.defense for s in summaries], "dataset and model: a wider terminal, or --json"),
               ("", [], "dataset/model/defense: a wider terminal, or --json"))
    for setup_head, setup, caption in choices:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, caption=caption)
        for head, justify in heads + (((setup_head, "left"),) if setup else ()):
            table.add_column(head, justify=justify, no_wrap=True, min_width=len(head))
        for i, row in enumerate(cells):
            # Text, not markup: names and values come from files, and a stray "[/x]" must not end the listing.
            table.add_row(*(Text(v) for v in row + ((setup[i],) if setup else ())))
        if Measurement.get(out, out.options.update_width(10_000), table).maximum <= width:
            return [table]
    blocks = []
    for (name, state, epoch, clean, robust), setup_cell in zip(cells, setups):
        blocks += [Text(name, style="bold"),
                   Text(f"  {state} · epoch={epoch} · clean={clean} · robust={robust} · {setup_cell}")]
    return blocks


@app.command()
def runs(
    runs_dir: Path = typer.Option(Path("runs"), "--runs", help="Folder that holds run folders."),
    latest: bool = typer.Option(False, "--latest", help="Print only the newest run's folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List runs with their status and best accuracies."""
    from dataclasses import asdict

    from rich.text import Text

    from .runs import list_runs

    summaries = list_runs(runs_dir)
    if latest:
        usable = [s for s in summaries if s.state != "unreadable"]  # later commands could not open one
        if not usable:
            raise WorkbenchError(f"no runs in {runs_dir}")
        print(usable[0].path)
        return
    if as_json:
        print(json.dumps([{**asdict(s), "path": str(s.path)} for s in summaries]))
        return
    if not summaries:
        out.print(f"no runs in {runs_dir}")
        return
    for part in _runs_listing(summaries, out.width):
        out.print(part, highlight=False)
    problems = [s for s in summaries if s.state in ("failed", "unreadable") and s.message]
    if problems:
        out.print()
    for s in problems:
        out.print(Text.assemble((s.name, "red"), f": {s.message}"), highlight=False, overflow="ellipsis",
                  no_wrap=True)


@app.command()
def stop(run: Path = typer.Argument(..., help="Run folder to stop.")) -> None:
    """Stop a running training cleanly (it checkpoints first; resume with train --resume)."""
    from .runs import stop_run

    state = stop_run(run)
    print(f"{run}: {state}")


def _profile_lines(rows: list[tuple[str, str, str, str, str]], width: int) -> list:
    """The profiles listing, never wider than `width`: name, dataset, model and defense whole (the name is
    what users copy), the description cut to the rest of the line, or on a line of its own under a
    narrow terminal."""
    from rich.text import Text

    heads = ("profile", "dataset", "model", "defense")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    fixed = sum(widths) + 2 * len(widths)
    inline = width - fixed >= 30  # room for a useful part of the description beside the columns

    def line(cells, description: str, style: str = "") -> Text:
        text = Text("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  ", style=style)
        if inline:
            text.append(description)
        text.truncate(width, overflow="ellipsis")
        text.rstrip()
        return text

    lines = [line(heads, "description", "bold")]
    for *cells, description in rows:
        lines.append(line(cells, description))
        if not inline and description:
            below = Text("    " + description, style="dim")
            below.truncate(width, overflow="ellipsis")
            lines.append(below)
    rule = Text("─" * max(text.cell_len for text in lines), style="dim")
    return lines[:1] + [rule] + lines[1:]


@app.command()
def profiles() -> None:
    """List the bundled profiles."""
    from .config import list_profiles, read_yaml

    rows = []
    for name, path in list_profiles().items():
        data = read_yaml(path) or {}
        model = data.get("model", "")
        defense = data.get("defense", "softmax")
        rows.append((name, str(data.get("dataset", "")), str(model.get("name") if isinstance(model, dict) else model),
                     str(defense.get("name") if isinstance(defense, dict) else defense),
                     " ".join(str(data.get("description", "")).split())))  # one line, whatever the YAML held
    for line in _profile_lines(rows, out.width):
        out.print(line, no_wrap=True, overflow="ellipsis", highlight=False)


@app.command()
def models() -> None:
    """List the model zoo with the inputs each fits and its taps."""
    import torch

    from .models import MODELS, create_model

    table = Table(box=box.SIMPLE_HEAD)
    for col in ("model", "description", "min size", "taps"):
        table.add_column(col, overflow="fold")
    for name, spec in MODELS.items():
        channels = spec.channels[0]
        size = max(spec.min_image_size, 32)
        with torch.device("meta"):  # taps without allocating weights
            taps = create_model(name, channels, 10, size).taps
        table.add_row(name, spec.description, str(spec.min_image_size), ", ".join(taps))
    out.print(table)


@app.command()
def datasets() -> None:
    """List the datasets and their shapes."""
    from .data import DATASETS, resolve_data_root

    table = Table(box=box.SIMPLE_HEAD, caption=f"data root: {resolve_data_root()}")
    for col in ("dataset", "shape", "classes", "augment", "description"):
        table.add_column(col, overflow="fold")
    for name, spec in DATASETS.items():
        table.add_row(name, f"{spec.channels}x{spec.image_size}x{spec.image_size}", str(spec.num_classes),
                      spec.augment, spec.description)
    out.print(table)


@app.command()
def tui(runs_dir: Path = typer.Option(Path("runs"), "--runs", help="Folder that holds run folders (as train --out).")) -> None:
    """The terminal UI: runs, live training charts, the attack panel and comparisons."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise WorkbenchError(f"--runs {runs_dir} is not a folder")
    if not (sys.__stderr__ and sys.__stderr__.isatty()):
        raise WorkbenchError("workbench tui needs a terminal (it draws on stderr, which is not a TTY)")
    from .tui import run_tui

    run_tui(runs_dir)


from .export.command import register as register_export  # noqa: E402  (torch-free; commands import lazily)
from .compare.command import register as register_compare  # noqa: E402  (torch-free)
from .suites.command import list_suites_command, suite_app  # noqa: E402

app.add_typer(suite_app, name="suite")
app.command(name="suites")(list_suites_command)
register_export(app)
register_compare(app)


def _is_usage_error(exc: BaseException) -> bool:
    # Typer ships click or a vendored copy of it; recognise its usage errors by shape, not by import.
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _report_error(exc: BaseException) -> int:
    """Print why the command failed on stderr (one `error:` line for bad input, the traceback for a bug)
    and return the exit status."""
    if isinstance(exc, WorkbenchError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    return 1


def main() -> None:
    """Entry point: bad input becomes one `error:` line on stderr and exit status 2, never a traceback."""
    keep_freed_memory()
    try:
        code = app(standalone_mode=False)
    except WorkbenchError as exc:
        sys.exit(_report_error(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        message = " ".join(exc.format_message().split())
        print(f"error: {message} (see workbench --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    if type(code).__name__ == "Abort" or code is None or code == 0:
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)
