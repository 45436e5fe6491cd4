"""workbench: train image classifiers with feature-compactness defenses and probe them with attacks.

Python API:
    x, y = workbench.load_data("mnist", split="test")       # float [0, 1], N x C x H x W
    model = workbench.create_model("small_cnn", 1, 10, 28)   # a TapNet; model(x, taps=[...])
    model = workbench.load_model("runs/.../checkpoints/best.pt")  # eval mode, [0, 1] in, logits out
"""

from .errors import WorkbenchError

__version__ = "0.1.0"
__all__ = ["WorkbenchError", "__version__", "create_model", "load_data", "load_model"]

# Imported on first use: torch takes seconds to import, and the CLI's listings and the TUI's
# first paint must not wait for it.
_LAZY = {"load_model": ".checkpoint", "load_data": ".data", "create_model": ".models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
