"""Where a run is in its data: epoch, batch, skipped samples, stream read positions.

The position is committed after every completed step, so a checkpoint written at a step boundary
(or an interruption while the next micro-batches are being read) never skips or repeats data.
A resume with another number of processes or another batch size continues at the same sample of
the epoch's permutation (map-style data) or at each reader's position (streams).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DataPosition:
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped: Counter = field(default_factory=Counter)
    stream_progress: dict = field(default_factory=dict)  # streams: read position of this epoch
    sample_offset: int = 0  # map-style: samples of the epoch before batch 0 (after a resize)
    committed: tuple = ()  # the position of the last completed step (see commit)

    def __post_init__(self):
        self.commit()

    @property
    def fresh_epoch(self) -> bool:
        return self.batch_in_epoch == 0 and not self.stream_progress and not self.sample_offset

    def next_epoch(self) -> None:
        self.epoch, self.batch_in_epoch, self.stream_progress, self.sample_offset = self.epoch + 1, 0, {}, 0

    def commit(self) -> None:
        """Record the position of the last completed step (what a checkpoint stores)."""
        self.committed = (
            self.epoch,
            self.batch_in_epoch,
            dict(self.skipped),
            dict(self.stream_progress),
            self.sample_offset,
        )

    def state(self, global_batch: int) -> dict:
        """The committed position as checkpoint entries (this rank's view)."""
        epoch, batch_in_epoch, skipped, progress, offset = self.committed
        return {
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "epoch_samples": offset + batch_in_epoch * global_batch,
            "skipped": skipped,
            "stream_progress": progress,
        }

    def restore(self, state: dict, processes: int, batch_size: int, map_style: bool, main: bool, say) -> None:
        """Continue at a checkpoint's position, with ``processes`` x ``batch_size`` samples per step
        now; ``say`` prints a line (the main process's)."""
        global_batch = processes * batch_size
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        # The position in samples of the epoch's permutation: with another world size or batch
        # size the run continues at the same sample.
        saved_global = state.get("world_size", 1) * state.get("batch_size", batch_size)
        epoch_samples = state.get("epoch_samples", self.batch_in_epoch * saved_global)
        if map_style and saved_global != global_batch:
            self.sample_offset, self.batch_in_epoch = epoch_samples, 0
            say(
                f"resuming with {processes} processes x {batch_size} per process (checkpoint: {saved_global} per "
                f"step): continuing at sample {epoch_samples} of epoch {self.epoch}"
            )
        elif map_style:
            self.sample_offset, self.batch_in_epoch = epoch_samples % global_batch, epoch_samples // global_batch
        self.stream_progress = dict(state.get("stream_progress", {}))
        # Skip counts are checkpointed summed over ranks; rank 0 carries them on.
        self.skipped = Counter(state["skipped"]) if main else Counter()
        self.commit()
