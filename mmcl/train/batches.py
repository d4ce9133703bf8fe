"""The batches of a run, across epoch boundaries, from its data position onwards."""

from __future__ import annotations

import torch

from ..data.stream import merge_positions
from ..errors import TrainingError


def _to_device(batch: dict, device, channels_last: bool) -> dict:
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        for key in ("images", "images2"):
            if key in batch:
                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
    return batch


def micro_batches(trainer):
    """Yield the trainer's batches forever, moving ``trainer.position`` as they are read.

    Ranks stay in step: a batch is used only if every rank has one with >= 2 usable samples (the
    skipped samples of a dropped batch are still counted), and a stream's epoch ends on every rank
    as soon as one rank runs out (or after ``epoch_batches`` in resampled mode)."""
    acc, data, pos = trainer.accelerator, trainer.data, trainer.position
    channels_last = trainer.recipe.train.channels_last
    while True:
        fresh_epoch = pos.fresh_epoch
        if fresh_epoch and data.sampler is not None and data.sampler.needs_loss_clusters:
            # the epoch's order groups the clusters the loss last saw each sample in
            data.sampler.set_clusters(*trainer.loss_fn.sample_table())
        data.start_epoch(pos.epoch, pos.batch_in_epoch, pos.stream_progress, pos.sample_offset)
        batches, used = iter(data.loader), 0
        while data.epoch_batches is None or pos.batch_in_epoch < data.epoch_batches:
            batch = next(batches, None)
            flags = torch.tensor([batch is None, batch is not None and batch["size"] < 2], device=acc.device)
            if acc.num_processes > 1:
                flags = acc.reduce(flags.float(), reduction="sum")
            if flags[0] > 0:
                break
            pos.batch_in_epoch += 1
            pos.skipped.update(batch["skipped"])
            if "position" in batch:
                merge_positions(pos.stream_progress, batch["position"])
            if flags[1] == 0:
                used += 1
                yield _to_device(batch, acc.device, channels_last)
            elif batch["size"]:
                # some rank's batch had < 2 usable samples: every rank drops its batch together
                pos.skipped["small_batch"] += batch["size"]
        if used == 0 and fresh_epoch:
            skipped = ", ".join(f"{k}={v}" for k, v in sorted(pos.skipped.items())) or "none"
            raise TrainingError(
                f"epoch {pos.epoch} gave no batch with 2 or more usable samples (skipped so far: {skipped}); "
                "check data.train and its keys, or lower data.batch_size"
            )
        pos.next_epoch()
