"""Cluster-aware batches: fill each stretch of the epoch from a group of neighbouring clusters, so
that hard negatives (similar but different content) meet in the same batch.

The sampler only changes the ORDER of an epoch's permutation; batches are still contiguous slices
of it, cut exactly as :class:`mmcl.data.sampler.ResumableBatchSampler` cuts them. So every rank
takes a disjoint block of every global batch, the epoch is covered once without duplicates, and
a resume (also with another number of processes or batch size) continues at the same sample.

The order is built block by block. A block of ``block`` samples starts at a seed cluster drawn
with probability proportional to its unused samples, and takes equal shares from it and its
``clusters_per_block - 1`` most similar clusters (centroid cosine) that still have samples,
moving on to the next most similar when those run out. Samples never seen by the loss (cluster
-1) form one extra group that is drawn like a cluster but has no neighbours. The per-sample
cluster table is a snapshot taken at the start of each epoch (from
:meth:`mmcl.losses.ClusterGuidedInfoNCE.sample_table`), kept in the checkpoint, and identical on
every rank; before the first snapshot the order is the plain seeded permutation.
"""

from __future__ import annotations

import torch

from ...errors import ConfigError
from .base import ResumableBatchSampler


class ClusterBatchSampler(ResumableBatchSampler):
    """:class:`ResumableBatchSampler` whose epoch order groups neighbouring clusters.

    Args:
        num_samples, batch_size, rank, world_size, seed: as for ``ResumableBatchSampler``.
        clusters_per_block: how many neighbouring clusters share a block (>= 1). 1 puts a single
            cluster in a block: the hardest batches, and the most false negatives.
        block: samples per block (>= 1). Independent of the batch size so that the order does not
            change when a run resumes with another world size; set it to the global batch for one
            neighbourhood per batch.
    """

    needs_loss_clusters = True

    @classmethod
    def check(cls, data, kind: str) -> None:
        bad = sorted(set(data.sampler_kwargs) - {"clusters_per_block", "block"})
        if bad:
            raise ConfigError(f"data.sampler_kwargs: unknown {bad}; valid keys: block, clusters_per_block")
        for key, value in data.sampler_kwargs.items():
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"data.sampler_kwargs.{key} must be an integer >= 1")

    @classmethod
    def from_config(cls, data, dataset, rank: int, world_size: int, seed: int):
        return cls(len(dataset), data.batch_size, rank, world_size, seed=seed, **data.sampler_kwargs)

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        clusters_per_block: int = 4,
        block: int = 256,
    ):
        super().__init__(num_samples, batch_size, rank, world_size, seed, shuffle=True)
        if clusters_per_block < 1:
            raise ValueError(f"clusters_per_block must be >= 1, got {clusters_per_block}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.clusters_per_block, self.block = clusters_per_block, block
        self.clusters: torch.Tensor | None = None  # (num_samples,) cluster of each sample, -1 unknown
        self.centroids: torch.Tensor | None = None  # (k, D)

    def set_clusters(self, clusters: torch.Tensor | None, centroids: torch.Tensor | None) -> None:
        """Snapshot the per-sample clusters (indexed by dataset index; shorter tables are padded
        with -1) and the centroids that define which clusters neighbour each other."""
        if clusters is None or centroids is None:
            self.clusters = self.centroids = None
            return
        table = torch.full((self.num_samples,), -1, dtype=torch.long)
        n = min(self.num_samples, clusters.numel())
        table[:n] = clusters[:n].long().cpu()
        k = centroids.shape[0]
        table[(table < -1) | (table >= k)] = -1
        self.clusters, self.centroids = table, centroids.detach().float().cpu().clone()

    def state_dict(self) -> dict:
        return {"clusters": self.clusters, "centroids": self.centroids}

    def load_state_dict(self, state: dict) -> None:
        self.set_clusters(state.get("clusters"), state.get("centroids"))

    def epoch_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.clusters is None:
            return torch.randperm(self.num_samples, generator=g).tolist()
        k = self.centroids.shape[0]
        group = torch.where(self.clusters < 0, torch.full_like(self.clusters, k), self.clusters)
        members = torch.randperm(self.num_samples, generator=g)
        members = members[torch.argsort(group[members], stable=True)]  # shuffled within each group
        counts = torch.bincount(group, minlength=k + 1)
        queues = list(torch.split(members, counts.tolist()))
        used = [0] * (k + 1)
        left = counts.clone()
        nearest = torch.argsort(self.centroids @ self.centroids.T, dim=1, descending=True, stable=True).tolist()
        order: list[torch.Tensor] = []
        while int(left.sum()) > 0:
            seed_group = int(torch.multinomial(left.float(), 1, generator=g))
            if seed_group == k:  # the unseen samples: no neighbours
                chain = [k]
            else:
                chain = [seed_group] + [c for c in nearest[seed_group] if c != seed_group]
            want = min(self.block, int(left.sum()))
            share = -(-want // min(self.clusters_per_block, len(chain)))
            taken = 0
            for c in chain:  # equal shares from the nearest non-empty groups, then the next ones
                if taken == want:
                    break
                n = min(share, want - taken, int(left[c]))
                if n == 0:
                    continue
                order.append(queues[c][used[c] : used[c] + n])
                used[c] += n
                left[c] -= n
                taken += n
        return torch.cat(order).tolist()
