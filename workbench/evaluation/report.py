"""Rendering an evaluation report as Rich tables (CLI, and the TUI's result view)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * lo:.1f}-{100 * hi:.1f}"


def _value(r: dict[str, Any]) -> str:
    v = r.get("value")
    if v is None:
        return "min-norm"
    prefix = "d=" if r.get("sweep_param") == "max_ratio" else ("<=" if r.get("threshold_of_minimum_norm") else "")
    return f"{prefix}{v:.4g}"


def _detail(r: dict[str, Any]) -> str:
    bits = []
    if r.get("mean_norm") is not None and r.get("value") is None or r.get("sweep_param") == "max_ratio":
        bits.append(f"mean {r['norm']} {r['mean_norm']:.3f}" if r.get("mean_norm") is not None else "")
    if r.get("mean_ratio") is not None:
        bits.append(f"rho {r['mean_ratio']:.3f}")
    if r.get("target_hit_rate") is not None:
        bits.append(f"target hit {pct(r['target_hit_rate'])}%")
    if r.get("broken_by"):
        bits.append(" ".join(f"{k}:{v}" for k, v in r["broken_by"].items()))
    return "; ".join(b for b in bits if b)


def results_table(report: dict[str, Any]) -> Table:
    title = (f"{report['checkpoint']}\n{report['dataset']}/{report['model']}/{report['defense']}, n={report['n']}, "
             f"clean {pct(report['clean_accuracy'])}% [{ci({'ci95': report['clean_ci95']})}]")
    if report.get("transfer_from"):
        title += f"\ntransfer: crafted on {report['transfer_from']}"
    speed = [f"amp {report['amp']}"] if report.get("amp", "off") != "off" else []
    speed += ["channels-last"] * bool(report.get("channels_last")) + ["compiled"] * bool(report.get("compile"))
    if speed:
        title += f"\nmodel forward: {', '.join(speed)}"
    caption = ("cascade: each row counts robustness to it and every row above it"
               if any(p.get("cascade") for p in report.get("protocols", [])) else None)
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  pad_edge=False)
    table.add_column("attack", overflow="fold", min_width=10)
    for col in ("eps", "robust%", "95% CI", "fooled%"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("details", overflow="fold")
    table.add_column("s", justify="right", no_wrap=True)
    by_protocol: dict[str, list[dict[str, Any]]] = {}
    for r in report["results"]:
        by_protocol.setdefault(r["protocol"], []).append(r)
    worst: dict[str, list[dict[str, Any]]] = {}
    for r in report["worst_case"]:
        worst.setdefault(r["protocol"], []).append(r)
    descriptions = {p["name"]: p for p in report.get("protocols", [])}
    for k, (proto, rows) in enumerate(by_protocol.items()):
        if k:
            table.add_section()
        cascade = descriptions.get(proto, {}).get("cascade")
        table.add_row(f"[bold cyan]{proto}[/bold cyan]" + (" (cascade)" if cascade else ""))
        seen_time: set[str] = set()
        for r in rows:
            secs = "" if r["label"] in seen_time else f"{r['seconds']:.1f}"
            seen_time.add(r["label"])
            table.add_row(r["label"], _value(r), pct(r["robust_accuracy"]), ci(r), pct(r["success_rate"]),
                          _detail(r), secs)
        for w in worst.get(proto, []):
            table.add_row("[bold]worst case[/bold]", f"{w['eps']:.4g}", f"[bold]{pct(w['robust_accuracy'])}[/bold]",
                          ci(w), "", f"any of {len(w['attacks'])}", "")
    return table


def side_by_side_table(report: dict[str, Any]) -> Table | None:
    """Worst-case robust accuracy per protocol (rows) and eps (columns): paper vs strong at a glance."""
    worst = [w for w in report["worst_case"] if w["protocol"] != "all"]
    protocols = list(dict.fromkeys(w["protocol"] for w in worst))
    if len(protocols) < 2:
        return None
    keys = sorted({(w["norm"], w["eps"]) for w in worst})
    table = Table(title="worst-case robust accuracy (%) by protocol", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("protocol")
    for norm, eps in keys:
        table.add_column(f"{norm} {eps:.4g}", justify="right")
    for proto in protocols + (["all"] if any(w["protocol"] == "all" for w in report["worst_case"]) else []):
        cells = {(w["norm"], w["eps"]): w for w in report["worst_case"] if w["protocol"] == proto}
        table.add_row(proto, *[pct(cells[k]["robust_accuracy"]) if k in cells else "" for k in keys])
    return table
