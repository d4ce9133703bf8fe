"""What a checkpoint holds besides the weights, gathered from every rank and restored exactly:
step, data position, optimizer, scheduler, loss state (e.g. a MoCo queue), sampler state and the
RNG streams of every rank."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from accelerate.utils import DistributedType, gather_object

from ..data.stream import merge_positions
from ..models.run_folder import load_state, load_weights
from .checkpoint import rng_state, save_checkpoint, set_rng_state


class _FullWeights(torch.nn.Module):
    """A gathered state dict, saved like a module (``save_model`` needs one)."""

    def __init__(self, state_dict: dict):
        super().__init__()
        self._weights = state_dict or {}

    def state_dict(self, *args, **kwargs):
        return self._weights


def training_state(trainer) -> dict:
    """This rank's state at the last completed step (see :class:`~mmcl.train.position.DataPosition`)."""
    acc, r = trainer.accelerator, trainer.recipe
    sampler = trainer.data.sampler
    return {
        "step": trainer.step,
        **trainer.position.state(acc.num_processes * r.data.batch_size),
        "samples_seen": trainer.samples_seen,
        "optimizer": trainer.optimizer.state_dict(),
        "loss": trainer.loss_fn.state_dict(),  # e.g. a MoCo key queue
        "scheduler": trainer.scheduler.state_dict(),
        "rng": rng_state(),
        # the data layout the position was counted in (resume may use another world size)
        "world_size": acc.num_processes,
        "batch_size": r.data.batch_size,
        # a cluster-aware sampler's per-epoch snapshot of the sample clusters
        "sampler": sampler.state_dict() if sampler is not None else None,
    }


def _merge_ranks(acc, state: dict) -> dict:
    """Every rank's RNG, readers' positions and skip counts in one state (a collective call)."""
    state["rng_ranks"] = gather_object([state["rng"]])
    ranks = gather_object([(state["stream_progress"], state["skipped"])])
    state["stream_progress"], skipped = {}, Counter()
    for progress, counts in ranks:
        for key, value in progress.items():
            merge_positions(state["stream_progress"], {key: value})
        skipped.update(counts)
    state["skipped"] = dict(skipped)
    return state


def save_training_state(trainer) -> Path | None:
    """Checkpoint the current step: every rank takes part, the main process writes."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    state = training_state(trainer)
    if acc.num_processes > 1:
        state = _merge_ranks(acc, state)
    model = trainer.unwrapped
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # sharded parameters: gather the full weights (every rank takes part) into a CPU copy
        model = _FullWeights(acc.get_state_dict(trainer.model))
    path = None
    if acc.is_main_process:
        extra = {"ema": trainer.ema.module} if trainer.ema is not None else None
        keep = trainer.recipe.train.keep_checkpoints
        path = save_checkpoint(trainer.run_dir, trainer.step, model, state, keep, extra)
    acc.wait_for_everyone()
    return path


def restore_training_state(trainer, path: str | Path) -> None:
    """Load a checkpoint into ``trainer``: weights, EMA, optimizer, scheduler, loss and sampler
    state, this rank's RNG streams and the data position."""
    path, acc = Path(path), trainer.accelerator
    load_weights(path, trainer.unwrapped)
    state = load_state(path)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.loss_fn.load_state_dict(state.get("loss", {}))
    if state.get("sampler") is not None and trainer.data.sampler is not None:
        trainer.data.sampler.load_state_dict(state["sampler"])
    ranks = state.get("rng_ranks")
    same_layout = state.get("world_size", 1) == acc.num_processes
    set_rng_state(ranks[acc.process_index] if ranks and same_layout else state["rng"])
    if trainer.ema is not None:
        if (path / "ema.safetensors").is_file():
            load_weights(path, trainer.ema.module, "ema.safetensors")
        else:
            acc.print(f"{path} has no ema.safetensors: the EMA starts from the loaded weights")
            trainer.ema.module.load_state_dict(trainer.unwrapped.state_dict())
    trainer.step, trainer.samples_seen = state["step"], state["samples_seen"]
    position = trainer.position
    position.restore(
        state,
        acc.num_processes,
        trainer.recipe.data.batch_size,
        trainer.data.sampler is not None,
        acc.is_main_process,
        acc.print,
    )
    acc.print(f"resumed from {path} at step {trainer.step} (epoch {position.epoch}, batch {position.batch_in_epoch})")
