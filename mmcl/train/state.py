"""What a checkpoint holds besides the weights, gathered from every rank and restored exactly:
step, data position, optimizer, scheduler, loss state (e.g. a MoCo queue), sampler state and the
RNG streams of every rank."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, gather_object

from ..data.stream import merge_positions
from ..models.run_folder import load_state, load_weights
from .checkpoint import (
    OPTIMIZER_DIR,
    discard_staged,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stage_checkpoint,
    write_error,
)
from .optim import param_groups
from .sharding import (
    fit_scheduler_state,
    full_state_dict,
    is_sharded,
    load_full_weights,
    load_sharded_optimizer,
    load_whole_optimizer,
    save_sharded_optimizer,
)


class _FullWeights(torch.nn.Module):
    """A gathered state dict, saved like a module (``save_model`` needs one)."""

    def __init__(self, state_dict: dict):
        super().__init__()
        self._weights = state_dict or {}

    def state_dict(self, *args, **kwargs):
        return self._weights


def training_state(trainer, with_optimizer: bool = True) -> dict:
    """This rank's state at the last completed step (see :class:`~mmcl.train.position.DataPosition`);
    without the optimizer's when it is saved apart (sharded)."""
    acc, r = trainer.accelerator, trainer.recipe
    sampler = trainer.data.sampler
    return {
        "step": trainer.step,
        **trainer.position.state(acc.num_processes * r.data.batch_size),
        "samples_seen": trainer.samples_seen,
        "optimizer": trainer.optimizer.state_dict() if with_optimizer else None,
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
    """Checkpoint the current step: every rank takes part, the main process writes. A sharded
    model's weights are gathered into one file; its optimizer state is written by every rank as
    its own shard (``optimizer/``, torch.distributed.checkpoint) before the folder is renamed into place."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    sharded = is_sharded(trainer.model)
    if sharded:
        state = training_state(trainer, with_optimizer=False)
        model = _FullWeights(full_state_dict(trainer.model))  # gathered on the main process's CPU
    else:
        state, model = training_state(trainer), trainer.unwrapped
    if acc.num_processes > 1:
        state = _merge_ranks(acc, state)
    staged = stage_sharded(trainer) if sharded else None
    path = None
    if acc.is_main_process:
        extra = {"ema": trainer.ema.module} if trainer.ema is not None else None
        keep = trainer.recipe.train.keep_checkpoints
        path = save_checkpoint(trainer.run_dir, trainer.step, model, state, keep, extra, staged=staged)
    acc.wait_for_everyone()
    return path


def stage_sharded(trainer) -> Path:
    """The main process's staging folder of this step's checkpoint, with every rank's optimizer
    shard written into ``optimizer/`` (a collective call). A failure on any rank fails every rank,
    and the main process removes the folder: nothing half-written is renamed into place."""
    acc = trainer.accelerator
    staged = [stage_checkpoint(trainer.run_dir, trainer.step) if acc.is_main_process else None]
    staged = Path(broadcast_object_list(staged)[0])
    try:
        save_sharded_optimizer(trainer.model, trainer.optimizer, staged / OPTIMIZER_DIR)
    except BaseException as e:
        if acc.is_main_process:
            discard_staged(staged)
        error = write_error(e.__cause__ or e, staged.parent, f"the optimizer shards of {staged.name}")
        if error is not None:
            raise error from e
        raise
    return staged


def restore_training_state(trainer, path: str | Path) -> None:
    """Load a checkpoint into ``trainer``: weights, EMA, optimizer, scheduler, loss and sampler
    state, this rank's RNG streams and the data position."""
    path, acc = Path(path), trainer.accelerator
    state = load_state(path)
    _restore_model_and_optimizer(trainer, path, state)
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


def _restore_model_and_optimizer(trainer, path: Path, state: dict) -> None:
    """Weights, optimizer and scheduler from a sharded or unsharded checkpoint into a sharded or
    unsharded run (any number of processes)."""
    acc, model, optimizer = trainer.accelerator, trainer.unwrapped, trainer.optimizer
    sharded = is_sharded(model)
    if sharded:
        load_full_weights(model, path / "model.safetensors", acc.is_main_process)
    else:
        load_weights(path, model)
    if (path / OPTIMIZER_DIR).is_dir():  # a sharded run's: re-sharded for this run
        load_sharded_optimizer(model, optimizer, path / OPTIMIZER_DIR)
    elif sharded:  # an unsharded run's, keyed by position: named in the optimizer's own order
        names = {p: n for n, p in model.named_parameters()}
        order = [names[p] for g in param_groups(model, trainer.recipe.train.weight_decay) for p in g["params"]]
        load_whole_optimizer(model, optimizer, state["optimizer"], order)
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler = trainer.scheduler
    scheduler.load_state_dict(fit_scheduler_state(state["scheduler"], len(optimizer.param_groups)))
    if sharded or (path / OPTIMIZER_DIR).is_dir():  # the groups' learning rate is the scheduler's
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
