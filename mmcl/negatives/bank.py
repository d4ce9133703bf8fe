"""A queue of recent image and text embeddings, with their sample ids.

Every rank pushes the same gathered embeddings, so the bank is identical on every rank. It is a
module whose buffers travel in checkpoints (as part of the loss's state).
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingBank(nn.Module):
    """Ring buffer of ``size`` rows: ``feats`` (size, D), ``ids`` (sample index, -1 when unknown)
    and ``modality`` (0 image, 1 text). ``D`` is set by the first push."""

    def __init__(self, size: int = 4096):
        super().__init__()
        if size < 1:
            raise ValueError(f"bank size must be >= 1, got {size}")
        self.size = size
        self.register_buffer("feats", torch.zeros(0))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("modality", torch.zeros(size, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "feats"
        if key in state_dict:
            self.feats = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __len__(self) -> int:
        return int(self.count)

    @torch.no_grad()
    def push(self, feats: torch.Tensor, modality: int, ids: torch.Tensor | None = None) -> None:
        feats = feats.detach().float()
        if self.feats.numel() == 0:
            self.feats = torch.zeros(self.size, feats.shape[1], device=feats.device)
        n = min(feats.shape[0], self.size)
        feats = feats[-n:]
        ids = ids[-n:].to(self.ids.device) if ids is not None else torch.full((n,), -1, dtype=torch.long)
        slots = (self.pointer + torch.arange(n, device=self.feats.device)) % self.size
        self.feats[slots] = feats.to(self.feats.device)
        self.ids[slots.to(self.ids.device)] = ids.to(self.ids.device)
        self.modality[slots.to(self.modality.device)] = modality
        self.pointer.copy_((self.pointer + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feats, ids, modality) of the filled rows."""
        n = len(self)
        return self.feats[:n], self.ids[:n], self.modality[:n]


def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """``k`` unit-norm centroids of unit-norm rows ``x`` (cosine k-means). faiss when installed,
    else torch; either way deterministic for a seed."""
    x = x.detach().float().contiguous()
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        # several restarts keep the best objective: one random start can merge two clusters
        km = faiss.Kmeans(
            x.shape[1], k, niter=iters, seed=seed, spherical=True, verbose=False, nredo=5, min_points_per_centroid=1
        )
        km.train(x.cpu().numpy())
        return torch.nn.functional.normalize(torch.from_numpy(km.centroids).to(x.device), dim=1)
    # farthest-point init (deterministic), then Lloyd iterations
    chosen = [int(torch.Generator().manual_seed(seed).initial_seed() % x.shape[0])]
    best = x @ x[chosen[0]]
    for _ in range(k - 1):
        chosen.append(int(best.argmin()))
        best = torch.maximum(best, x @ x[chosen[-1]])
    cents = x[chosen].clone()
    for _ in range(iters):
        ids = (x @ cents.T).argmax(1)
        sums = torch.zeros_like(cents).index_add_(0, ids, x)
        filled = torch.bincount(ids, minlength=k) > 0
        cents = torch.where(filled[:, None], torch.nn.functional.normalize(sums, dim=1), cents)
    return cents
