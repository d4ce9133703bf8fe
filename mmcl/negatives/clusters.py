"""Online clustering of image and text embeddings in their shared space.

ClusterNS (Deng et al., ACL Findings 2023), extended to two modalities as CM-CGNS proposes: both
modalities' embeddings go into one centroid set, so an image and a caption can share a cluster.

1. **Gate.** Clustering starts once the mean pairwise cosine of a batch's embeddings falls below
   ``gate`` (0.4). Early in training all embeddings are close and clusters would mean nothing.
2. **Init.** ``k`` centroids by greedy farthest-point selection among the batch's points. It
   starts from the point farthest from their mean, so the init is deterministic.
3. **Assign.** Each point goes to its most similar centroid (cosine).
4. **Update.** ``c <- momentum * sum(assigned points) + (1 - momentum) * c``, then re-normalise.
   Empty clusters are left unchanged.

``mode="periodic"`` replaces step 4: the embeddings go into an :class:`EmbeddingBank`, and every
``recluster_every`` steps the centroids are recomputed by spherical k-means over the whole bank
(faiss when installed, torch otherwise).

Every rank calls :meth:`observe` with the same gathered embeddings, so the centroids and the
assignments are identical on every rank. After a periodic k-means the centroids are also
broadcast from rank 0, in case a multi-threaded k-means differs in the last bit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .bank import EmbeddingBank, spherical_kmeans


class SharedSpaceCentroids(nn.Module):
    """``k`` unit-norm centroids; buffers, so they are saved with the loss in checkpoints."""

    def __init__(
        self,
        k: int = 128,
        momentum: float = 1e-3,
        gate: float = 0.4,
        mode: str = "online",
        bank_size: int = 4096,
        recluster_every: int = 100,
    ):
        super().__init__()
        if k < 2:
            raise ValueError(f"k must be >= 2 clusters, got {k}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if mode not in ("online", "periodic"):
            raise ValueError(f"mode must be 'online' or 'periodic', got {mode!r}")
        if mode == "periodic" and (bank_size < k or recluster_every < 1):
            raise ValueError(f"periodic mode needs bank_size >= k ({k}) and recluster_every >= 1")
        self.k, self.momentum, self.gate, self.mode = k, momentum, gate, mode
        self.recluster_every = recluster_every
        self.bank = EmbeddingBank(bank_size) if mode == "periodic" else None
        self.register_buffer("centroids", torch.zeros(0))
        self.register_buffer("active", torch.tensor(False))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the centroid matrix is created lazily: take the saved shape
        key = prefix + "centroids"
        if key in state_dict:
            self.centroids = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def started(self) -> bool:
        return bool(self.active)

    @staticmethod
    def mean_cosine(points: torch.Tensor) -> float:
        """Mean off-diagonal cosine similarity of unit-norm ``points``."""
        n = points.shape[0]
        total = points.sum(0)
        return float(((total @ total) - n) / max(1, n * (n - 1)))

    @torch.no_grad()
    def _init(self, points: torch.Tensor) -> None:
        first = int((points @ F.normalize(points.mean(0), dim=0)).argmin())
        chosen = [first]
        best = points @ points[first]  # similarity to the closest chosen centroid
        for _ in range(self.k - 1):
            nxt = int(best.argmin())
            chosen.append(nxt)
            best = torch.maximum(best, points @ points[nxt])
        self.centroids = points[chosen].clone()
        self.active.fill_(True)

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of each row's most similar centroid (requires :attr:`started`)."""
        return (x.to(self.centroids.dtype) @ self.centroids.T).argmax(1)

    @torch.no_grad()
    def neighbours(self, n: int) -> torch.Tensor:
        """(k, n): each cluster's ``n`` most similar OTHER clusters."""
        sim = self.centroids @ self.centroids.T
        sim.fill_diagonal_(-float("inf"))
        return sim.topk(min(n, self.k - 1), dim=1).indices

    @torch.no_grad()
    def observe(self, images: torch.Tensor, texts: torch.Tensor, ids: torch.Tensor | None = None) -> bool:
        """Start (gate + init) or update the centroids with a batch's unit-norm image and text
        embeddings (the same on every rank; ``ids``: their sample indices, for the bank).
        Returns whether clustering is active afterwards."""
        points = torch.cat([images, texts]).detach().float()
        self.steps += 1
        if self.bank is not None:
            self.bank.push(images, 0, ids)
            self.bank.push(texts, 1, ids)
        if not self.started:
            if points.shape[0] >= self.k and self.mean_cosine(points) < self.gate:
                if self.bank is not None and len(self.bank) >= self.k:
                    self._recluster()
                else:
                    self._init(points)
            return self.started
        if self.bank is not None:
            if int(self.steps) % self.recluster_every == 0:
                self._recluster()
            return True
        ids_ = self.assign(points)
        sums = torch.zeros_like(self.centroids).index_add_(0, ids_, points)
        filled = torch.bincount(ids_, minlength=self.k) > 0
        updated = F.normalize(self.momentum * sums + (1 - self.momentum) * self.centroids, dim=1)
        self.centroids = torch.where(filled[:, None], updated, self.centroids)
        return True

    @torch.no_grad()
    def _recluster(self) -> None:
        feats, _, _ = self.bank.contents()
        cents = spherical_kmeans(feats, self.k, seed=int(self.steps))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(cents, src=0)
        self.centroids = cents
        self.active.fill_(True)
