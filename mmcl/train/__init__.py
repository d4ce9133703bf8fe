"""Training: the Accelerate loop, optimizers and schedules, checkpoints and run folders."""

from ..models.run_folder import load_run
from .checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from .trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError", "latest_checkpoint", "list_checkpoints", "load_run", "save_checkpoint"]
