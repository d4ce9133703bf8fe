"""Training: the Accelerate loop, optimizers and schedules, checkpoints and run folders."""

from .checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from .run_dir import load_run
from .trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError", "latest_checkpoint", "list_checkpoints", "load_run", "save_checkpoint"]
