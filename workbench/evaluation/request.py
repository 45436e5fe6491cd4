"""What one `workbench attack` runs: a paper preset, chosen attacks, the strong and adaptive protocols.

The CLI and the suite runner both ask through here, so "which eps the strong protocol uses beside a
preset" is decided in one place.
"""

from __future__ import annotations

from typing import Any, Callable

from .attack_eval import adaptive_loss, adaptive_protocol
from .presets import build_protocol, default_eps
from .protocol import Protocol


def requested_protocols(info: dict[str, Any], *, preset: str | None, eps: list[float] | None, norm: str,
                        strong: bool, adaptive: bool,
                        custom: Callable[[list[float]], Protocol | None] | None = None) -> list[Protocol]:
    """The protocols for a checkpoint (`info`: its dataset, recipe and path), in report order.

    Without `eps`, chosen attacks and the strong protocol run at the preset's eps values (so the strong
    protocol stands beside the paper's), else at the dataset's defaults."""
    dataset = info["dataset"]
    eps_values = eps or default_eps(dataset, norm)
    protocols = []
    if preset is not None:
        paper = build_protocol(preset, dataset, eps, norm)
        protocols.append(paper)
        if eps is None:
            swept = {v for spec in paper.specs if spec.sweep_param == "eps" and spec.norm == norm
                     for v in spec.sweep or []}
            eps_values = sorted(swept) or eps_values
    chosen = custom(eps_values) if custom is not None else None
    if chosen is not None and chosen.specs:
        protocols.append(chosen)
    if strong:
        protocols.append(build_protocol("strong", dataset, eps_values, norm))
    if adaptive:
        protocols.append(adaptive_protocol(adaptive_loss(info["recipe"], info["path"]), eps_values, norm))
    return protocols
