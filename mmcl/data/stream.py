"""Streaming training data: shards split across ranks and workers, shuffled, batched, resumable.

A stream is a list of *shards* (WebDataset tar files, or shards of a streaming Hugging Face
dataset). Every (rank, dataloader worker) pair is one *reader*; reader ``g`` of ``G`` reads its
own shards, so no sample is read twice in an epoch.

Finite mode (default): each epoch the shards are permuted by (seed, epoch) and dealt round-robin
to the readers. An epoch ends, for every rank together, when the first rank runs out of data (the
trainer checks this each step). What the other ranks have not read by then is not used in that
epoch: about one batch per reader when shards are equal and divide evenly among the readers, up
to a shard's worth per reader otherwise (use a shard count that is a multiple of processes x
workers).

Resampled mode (``resampled=True``): every reader draws shards with replacement, by source weight,
from its own seeded stream; the trainer ends an epoch after ``epoch_size`` samples.

Inside a shard samples are shuffled in blocks of ``shuffle_block`` (read a block, emit it in a
seeded order). Batches are filled to ``batch_size`` usable samples inside the reader; skipped
samples do not shrink a batch.

Position and resume: each batch carries ``position``, the number of samples read so far of every
shard it touched (-1 once a shard is finished). The trainer merges these for the batches it has
trained on, and saves them in checkpoints. On resume:

- finite mode: the unfinished shards of the epoch are dealt again to the readers, each starting
  at its saved sample, so every sample of the epoch is trained on exactly once, whatever the new
  number of processes or workers (samples dropped at an epoch end excepted, as above);
- resampled mode: with the same number of readers each one regenerates its stream and continues
  at its saved shard and sample: exact. With a different number, the readers start fresh streams
  for the rest of the epoch (sampling with replacement has no "unseen" samples to protect).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("mmcl")

MAX_BAD_RUN = 10_000  # unusable samples in a row before a reader gives up (a wrong source, not bad luck)


@dataclass
class Shard:
    """One unit of streaming work. ``read(skip)`` yields raw records from record ``skip`` on and
    raises one of ``errors`` when the shard cannot be read."""

    name: str
    read: Callable[[int], Iterator]
    source: int = 0  # index of the data source it belongs to (for mixing weights)
    errors: tuple = (OSError,)


class StreamDataset(torch.utils.data.IterableDataset):
    """Yields collated batches (see module docs). Use with ``DataLoader(batch_size=None)``.

    Args:
        shards: the shards of every source.
        decode: ``(record, shard, uid_hint, epoch) -> item or (None, reason)``.
        collate: list of items -> batch dict (drops and counts skipped items).
        batch_size: usable samples per batch (per process).
        weights: per source, the fraction of samples drawn from it (resampled mode).
    """

    def __init__(
        self,
        shards: list[Shard],
        decode: Callable,
        collate: Callable,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_block: int = 256,
        resampled: bool = False,
        weights: list[float] | None = None,
    ):
        if not shards:
            raise ValueError("no shards")
        self.shards, self.decode, self.collate = shards, decode, collate
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.shuffle_block = seed, shuffle, max(1, shuffle_block)
        self.resampled = resampled
        n_sources = max(s.source for s in shards) + 1
        weights = list(weights) if weights else [1.0] * n_sources
        counts = np.bincount([s.source for s in shards], minlength=n_sources)
        # source s is drawn with probability weights[s]; uniformly among its shards
        p = np.array([weights[s.source] / counts[s.source] for s in shards], dtype=np.float64)
        self.shard_p = p / p.sum()
        self.epoch = 0
        self.progress: dict = {}

    def set_epoch(self, epoch: int, progress: dict | None = None) -> None:
        """Start ``epoch`` at ``progress`` (the merged ``position`` of the batches already trained on)."""
        self.epoch, self.progress = epoch, dict(progress or {})

    def readers(self, num_workers: int) -> int:
        return self.world_size * max(1, num_workers)

    # -- reading --------------------------------------------------------------------------------
    def _records(self, shard: Shard, start: int, order_seed: list[int]):
        """``(record_number, record)`` of one shard from ``start``, block-shuffled; a trailing
        ``(None, None)`` when the shard broke (counted once as ``unreadable_shard``)."""
        k = self.shuffle_block
        block_start = start // k * k
        block: list = []
        b = block_start // k

        def emit(block, b, first):
            order = (
                np.random.default_rng([*order_seed, b]).permutation(len(block))
                if self.shuffle
                else np.arange(len(block))
            )
            for j in order[first:]:
                yield block[j]

        try:
            first = start - block_start
            for n, record in enumerate(shard.read(block_start), block_start):
                block.append((n, record))
                if len(block) == k:
                    yield from emit(block, b, first)
                    block, b, first = [], b + 1, 0
        except shard.errors as e:
            log.warning("shard %s could not be read (%s: %s); skipping the rest of it", shard.name, type(e).__name__, e)
            yield from emit(block, b, first)
            yield None, None
            return
        yield from emit(block, b, first)

    def _batches(self, work):
        """Fill batches from ``(shard, start, order_seed, where)`` work items; ``where(done)`` is the
        position update after ``done`` records of that shard (``done=None``: the shard is finished).

        A full batch is held until the next usable sample turns up, so the skipped samples and
        finished shards in between travel with it: when the data ends on a full batch, the last
        batch still reports every skip of the epoch."""
        items, position, usable, bad_run = [], {}, 0, 0
        for shard, start, order_seed, where in work:
            done = start
            for n, record in self._records(shard, start, order_seed):
                if record is None:
                    items.append((None, "unreadable_shard"))
                    break
                item = self.decode(record, shard, n, self.epoch)
                bad_run = 0 if isinstance(item, dict) else bad_run + 1
                if bad_run > MAX_BAD_RUN:
                    reasons = Counter(it[1] for it in items if isinstance(it, tuple))
                    raise RuntimeError(
                        f"{MAX_BAD_RUN} samples in a row could not be used (last shard {shard.name}; "
                        f"{dict(reasons)}): check data.image_key / data.caption_key and the data"
                    )
                if isinstance(item, dict) and usable == self.batch_size:
                    yield self._emit(items, position)
                    items, position, usable = [], {}, 0
                done += 1
                items.append(item)
                usable += isinstance(item, dict)
                position.update(where(done))
            position.update(where(None))
        if items or position:
            yield self._emit(items, position)

    def _emit(self, items, position):
        batch = self.collate(items)
        batch["position"] = position
        return batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        g, readers = self.rank * workers + wid, self.world_size * workers
        if self.resampled:
            return self._resampled(g, readers)
        return self._finite(g, readers)

    def epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.shards)))
        return np.random.default_rng([self.seed, self.epoch, 7]).permutation(len(self.shards)).tolist()

    def _finite(self, g: int, readers: int):
        order = self.epoch_order()
        remaining = [(i, self.progress.get(str(i), 0)) for i in range(len(order))]
        mine = [(i, start) for i, start in remaining if start != -1][g::readers]

        def where(key):
            return lambda done: {key: -1 if done is None else done}

        work = ((self.shards[order[i]], start, [self.seed, self.epoch, order[i]], where(str(i))) for i, start in mine)
        return self._batches(work)

    def _resampled(self, g: int, readers: int):
        key = f"r{g}"
        state = self.progress.get(key) if self.progress.get("readers") == readers else None
        draw0, start0 = state if state else (0, 0)

        def where(draw):
            return lambda done: {key: [draw + 1, 0] if done is None else [draw, done], "readers": readers}

        def work():
            rng = np.random.default_rng([self.seed, self.epoch, g, 11])
            d = 0
            while True:
                i = int(rng.choice(len(self.shards), p=self.shard_p))
                if d >= draw0:
                    yield self.shards[i], start0 if d == draw0 else 0, [self.seed, self.epoch, g, d], where(d)
                d += 1

        return self._batches(work())


def _further(a, b) -> bool:
    """Is read position ``a`` further on than ``b``? Finite: an int (-1 = finished); resampled:
    ``[draw, samples read in that draw]``."""
    if b is None:
        return True
    if isinstance(a, list):
        return tuple(a) > tuple(b)
    return b != -1 and (a == -1 or a > b)


def merge_positions(into: dict, position: dict) -> None:
    """Fold a ``position`` (one batch's, or another rank's progress) into ``into``: per key the
    furthest position wins, so merging is order-free and a stale copy never moves a shard back.
    A different reader layout in resampled mode drops the old readers' keys."""
    readers = position.get("readers")
    if readers is not None and into.get("readers") not in (None, readers):
        for key in [k for k in into if k.startswith("r") and k != "readers"]:
            del into[key]
    for key, value in position.items():
        if key == "readers":
            into[key] = value
        elif _further(value, into.get(key)):
            into[key] = value
