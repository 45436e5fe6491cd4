"""workbench: train image classifiers with feature-compactness defenses and probe them with attacks.

Python API:
    x, y = workbench.load_data("mnist", split="test")       # float [0, 1], N x C x H x W
    model = workbench.create_model("small_cnn", 1, 10, 28)   # a TapNet; model(x, taps=[...])
    model = workbench.load_model("runs/.../checkpoints/best.pt")  # eval mode, [0, 1] in, logits out
"""

from .checkpoint import load_model
from .data import load_data
from .errors import WorkbenchError
from .models import create_model

__version__ = "0.1.0"
__all__ = ["WorkbenchError", "__version__", "create_model", "load_data", "load_model"]
