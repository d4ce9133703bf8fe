"""A seeded, resumable, rank-aware batch sampler for map-style datasets."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from ...errors import ConfigError


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields this rank's index batches for one epoch of a seeded permutation.

    Every epoch draws ``randperm(n)`` from ``(seed, epoch)``; global batch ``b`` is the slice
    ``[b * B * W, (b + 1) * B * W)`` and rank ``r`` takes its ``r``-th block of ``B``. So ranks see
    disjoint samples, the order does not depend on the number of dataloader workers, and a resume
    at ``(epoch, start_batch)`` continues with exactly the next unseen batch. ``start_sample``
    shifts the batches to start at that sample of the permutation: a resume with another number
    of processes (or batch size) continues at the same sample. The incomplete last global batch is
    dropped (contrastive losses need equal batches on every rank).
    """

    # the loss must expose its per-sample clusters (sample_table / set_clusters), see losses.checks
    needs_loss_clusters = False

    @classmethod
    def check(cls, data, kind: str) -> None:
        """Raise ConfigError for ``data.sampler_kwargs`` this sampler does not take."""
        if data.sampler_kwargs:
            raise ConfigError(
                f"data.sampler_kwargs: {data.sampler!r} takes none (got {sorted(data.sampler_kwargs)}); "
                "samplers with options: clusters, caption_edits"
            )

    @classmethod
    def from_config(cls, data, dataset, rank: int, world_size: int, seed: int):
        return cls(len(dataset), data.batch_size, rank, world_size, seed=seed)

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps of the sampler beyond the data position (None: nothing)."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`."""

    def __init__(
        self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ):
        if num_samples < batch_size * world_size:
            raise ValueError(
                f"{num_samples} samples cannot fill one global batch of {batch_size} x {world_size} processes"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start_batch = 0
        self.start_sample = 0

    def set_epoch(self, epoch: int, start_batch: int = 0, start_sample: int = 0) -> None:
        self.epoch, self.start_batch, self.start_sample = epoch, start_batch, start_sample

    def __len__(self) -> int:
        return (self.num_samples - self.start_sample) // (self.batch_size * self.world_size) - self.start_batch

    def epoch_order(self) -> list[int]:
        """This epoch's permutation of the sample indices (the same on every rank)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self):
        order = self.epoch_order()
        global_batch = self.batch_size * self.world_size
        for b in range(self.start_batch, (self.num_samples - self.start_sample) // global_batch):
            start = self.start_sample + b * global_batch + self.rank * self.batch_size
            yield order[start : start + self.batch_size]
