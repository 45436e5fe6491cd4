"""The model zoo. Importing this package registers every model family."""

from . import tiny, small_cnn, lenet, cnn3, cnn6, madry, vgg, resnet, wrn  # noqa: F401  (registration side effects)
from .base import Normalize, TapNet
from .registry import (
    MAX_PARAMETERS, MODELS, ModelSpec, check_parameter_budget, create_model, model_taps, register_model,
)

__all__ = ["MAX_PARAMETERS", "MODELS", "ModelSpec", "Normalize", "TapNet", "check_parameter_budget", "create_model",
           "model_taps", "register_model"]
