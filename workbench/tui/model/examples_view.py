"""The `--save-examples` file -> plain examples for the gallery, grouped by (protocol, attack, eps).

`load_examples` imports torch: the TUI's backend process runs it and sends `example_to_json` (pixels as
base64 float32, exact and compact), rebuilt by `example_from_json`; everything else is pure and works on
nested lists, so the gallery never touches a tensor: grouping, the fooled-first order, and the numbers of
the zoomed view (the perturbation's norms and how much its picture is amplified).
"""

from __future__ import annotations

import base64
from array import array
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

Pixels = Sequence[Sequence[Any]]  # pixels[y][x]: a float (gray) or an (r, g, b) triple in [0, 1]


@dataclass
class Example:
    protocol: str
    attack: str
    value: float | None
    sample: int
    true: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float
    clean: Pixels
    adversarial: Pixels
    norm: str = ""  # the attack's threat model ("linf", "l2"); version 1 files do not say

    @property
    def fooled(self) -> bool:
        return self.adv_pred != self.true

    @property
    def group(self) -> tuple[str, str, float | None]:
        return self.protocol, self.attack, self.value

    def caption(self) -> str:
        """'#3 fooled 9 → 3, 0.96 · clean 9 (0.99)': true class → adversarial class, adversarial confidence."""
        return (f"#{self.sample} {'fooled' if self.fooled else 'robust'} {self.true} → {self.adv_pred},"
                f" {self.adv_conf:.2f} · clean {self.clean_pred} ({self.clean_conf:.2f})")


def _pixels(t: Any) -> Pixels:
    """A CxHxW tensor -> pixels[y][x] (a float for one channel, an (r, g, b) list for three)."""
    t = t.float().clamp(0, 1)
    return t[0].tolist() if t.shape[0] == 1 else t[:3].permute(1, 2, 0).tolist()


VERSIONS = (1, 2)  # 1: the first N pairs per eps; 2: up to N fooled and N robust, with the attack's norm


def load_examples(path: str | Path) -> list[Example]:
    """Read an examples file written by `workbench attack --save-examples` (tensors only)."""
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "workbench-examples":
        raise ValueError(f"{path}: not a workbench examples file")
    if payload.get("version", 1) not in VERSIONS:  # a newer writer: its fields may mean something else
        raise ValueError(f"{path}: examples file version {payload.get('version')!r}, this reader knows "
                         f"{', '.join(map(str, VERSIONS))}")
    out = []
    for e in payload.get("examples", []):
        value = e.get("value")
        out.append(Example(protocol=str(e.get("protocol", "")), attack=str(e.get("attack", "?")),
                           value=float(value) if isinstance(value, (int, float)) else None,
                           sample=int(e.get("sample", -1)), true=int(e.get("true", -1)),
                           clean_pred=int(e.get("clean_pred", -1)), clean_conf=float(e.get("clean_conf", 0.0)),
                           adv_pred=int(e.get("adv_pred", -1)), adv_conf=float(e.get("adv_conf", 0.0)),
                           clean=_pixels(e["clean"]), adversarial=_pixels(e["adversarial"]),
                           norm=str(e.get("norm") or "")))
    return out


# -- JSON (the backend's wire format) ----------------------------------------------------------
def pixels_to_json(pixels: Pixels) -> dict[str, Any]:
    """pixels[y][x] -> {"shape": [h, w] or [h, w, c], "f32": base64 of the float32 values, row-major}.
    The values came from float32 tensors, so float32 keeps them exactly."""
    h = len(pixels)
    w = len(pixels[0]) if h else 0
    gray = not (h and w) or isinstance(pixels[0][0], (int, float))
    flat = array("f", (v for row in pixels for px in row for v in ((px,) if gray else px)))
    shape = [h, w] if gray else [h, w, len(pixels[0][0])]
    return {"shape": shape, "f32": base64.b64encode(flat.tobytes()).decode("ascii")}


def pixels_from_json(data: dict[str, Any]) -> list[list[Any]]:
    flat = array("f")
    flat.frombytes(base64.b64decode(data["f32"]))
    values = flat.tolist()
    h, w, *c = data["shape"]
    if not c:
        return [values[y * w:(y + 1) * w] for y in range(h)]
    c = c[0]
    return [[values[(y * w + x) * c:(y * w + x + 1) * c] for x in range(w)] for y in range(h)]


_PIXEL_FIELDS = ("clean", "adversarial")


def example_to_json(e: Example) -> dict[str, Any]:
    out = {f.name: getattr(e, f.name) for f in fields(Example) if f.name not in _PIXEL_FIELDS}
    out.update({name: pixels_to_json(getattr(e, name)) for name in _PIXEL_FIELDS})
    return out


def example_from_json(data: dict[str, Any]) -> Example:
    values = {f.name: data[f.name] for f in fields(Example) if f.name not in _PIXEL_FIELDS and f.name in data}
    return Example(**values, **{name: pixels_from_json(data[name]) for name in _PIXEL_FIELDS})


def groups(examples: list[Example]) -> list[tuple[str, str, float | None]]:
    """(protocol, attack, eps) in file order (the order the attacks ran)."""
    return list(dict.fromkeys(e.group for e in examples))


FILTERS = ("all", "fooled", "robust")  # what the gallery shows of a group; "all" lists the fooled first


def select(examples: list[Example], which: str = "all") -> list[Example]:
    """The examples `which` asks for, fooled before robust (file order within each)."""
    keep = [e for e in examples if which == "all" or e.fooled == (which == "fooled")]
    return sorted(keep, key=lambda e: not e.fooled)


def group_label(group: tuple[str, str, float | None], several_protocols: bool = False) -> str:
    protocol, attack, value = group
    name = f"{protocol}:{attack}" if several_protocols else attack
    return name if value is None else f"{name} eps {value:g}"


def _flat(p: Any) -> list[float]:
    return [float(p)] if isinstance(p, (int, float)) else [float(c) for c in p]


def amplified_perturbation(clean: Pixels, adversarial: Pixels) -> list[list[Any]]:
    """(adv - clean) / (2 max|adv - clean|) + 0.5: mid-gray is no change, the largest change hits 0 or 1."""
    diffs = [[[a - c for a, c in zip(_flat(pa), _flat(pc))] for pa, pc in zip(ra, rc)]
             for ra, rc in zip(adversarial, clean)]
    peak = max((abs(v) for row in diffs for px in row for v in px), default=0.0)
    scale = 2 * peak if peak > 0 else 1.0
    gray = bool(clean) and bool(clean[0]) and isinstance(clean[0][0], (int, float))
    return [[(px[0] / scale + 0.5) if gray else [v / scale + 0.5 for v in px] for px in row] for row in diffs]


# -- the zoomed view of one example -------------------------------------------------------------
def perturbation_norms(e: Example) -> tuple[float, float]:
    """(L-inf, L2) of adversarial - clean over every pixel and channel. The file keeps float16 images,
    so these carry its rounding (about 1e-3 at 1.0)."""
    diffs = [a - c for ra, rc in zip(e.adversarial, e.clean) for pa, pc in zip(ra, rc)
             for a, c in zip(_flat(pa), _flat(pc))]
    return max((abs(d) for d in diffs), default=0.0), sum(d * d for d in diffs) ** 0.5


def amplification(e: Example) -> float | None:
    """How much `amplified_perturbation` enlarges the change (None: no change to enlarge)."""
    linf, _ = perturbation_norms(e)
    return 1 / (2 * linf) if linf > 0 else None


NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1"}


def _eps_text(e: Example) -> str:
    if e.value is None:
        return "unbounded (a minimum-norm attack)"
    norm = NORM_NAMES.get(e.norm, e.norm)
    return f"{e.value:g}" + (f" ({norm})" if norm else "") + (f" = {e.value * 255:.3g}/255" if e.norm == "linf" else "")


def zoom_facts(e: Example) -> list[tuple[str, str, str]]:
    """(name, value, style) lines under the zoomed images: what the model said and how large the change was."""
    linf, l2 = perturbation_norms(e)
    gain = amplification(e)
    verdict = ("fooled", "bold red") if e.fooled else ("robust", "green")
    return [
        ("label", str(e.true), "bold"),
        ("clean", f"{e.clean_pred} ({e.clean_conf:.2f})", ""),
        ("adversarial", f"{e.adv_pred} ({e.adv_conf:.2f}) · {verdict[0]}", verdict[1]),
        ("eps", f"{_eps_text(e)} · {e.attack}" + (f" ({e.protocol})" if e.protocol else ""), ""),
        ("perturbation", f"L∞ {linf:.4f} = {linf * 255:.3g}/255 · L2 {l2:.4f}", ""),
        ("shown", f"×{gain:.3g} to the full range; mid-gray is no change" if gain else "no change at all", "dim"),
    ]
