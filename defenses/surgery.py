"""Model surgery for architecture-changing defenses: name layers, swap modules in place.

Layers have short names in module order, as the CCN paper's Table 13 uses them: `conv1..convN`
for the `nn.Conv2d` layers and `fc1..fcM` for the `nn.Linear` layers (on SmallCNN: conv1-conv4,
fc1-fc3, fc3 being the classifier). A full module path (`stages.fc1.0`) works too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from workbench.errors import WorkbenchError


def named_layers(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """{short name: (module path, module)} for every conv and linear layer, input to output."""
    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)]
    table = {f"conv{i + 1}": pm for i, pm in enumerate(convs)}
    table.update({f"fc{i + 1}": pm for i, pm in enumerate(linears)})
    return table


def resolve_layers(model: nn.Module, wanted: Iterable[str]) -> list[tuple[str, str]]:
    """(short name, module path) for each requested layer; an unknown name is a one-line error."""
    table = named_layers(model)
    by_path = {path: short for short, (path, _) in table.items()}
    out = []
    for name in wanted:
        if name in table:
            out.append((name, table[name][0]))
        elif name in by_path:
            out.append((by_path[name], name))
        else:
            known = ", ".join(table) or "none"
            raise WorkbenchError(f"unknown layer {name!r}; this model's conv/linear layers are {known}")
    return out


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def replace_all(model: nn.Module, match: Callable[[nn.Module], bool],
                build: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every module `match` accepts by `build(module)`; returns how many were replaced."""
    targets = [(p, m) for p, m in model.named_modules() if p and match(m)]
    for path, module in targets:
        replace_module(model, path, build(module))
    return len(targets)
