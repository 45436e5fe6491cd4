"""Exporting runs to other tools: `workbench export RUN|SUITE --tensorboard DIR`.

Torch-free to import: the writers import torch and tensorboard when they run."""

from .tensorboard import Exported, export_run, export_runs

__all__ = ["Exported", "export_run", "export_runs"]
