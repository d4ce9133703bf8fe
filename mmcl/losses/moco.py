"""MoCo: contrast against a queue of keys from a momentum encoder (He et al. 2020, "Momentum Contrast
for Unsupervised Visual Representation Learning"; Chen et al. 2020, MoCo v2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_positive, check_rank_world, check_two_views
from ._distributed import batch_sizes, dist_info, gather_no_grad
from .base import ContrastiveLoss, register_loss


@register_loss("moco")
class MoCoLoss(ContrastiveLoss):
    """loss_i = CE([q_i . k_i, q_i . queue] / t, 0), mean over the global batch; then the keys of
    the whole global batch are enqueued (gathered from every rank, in rank order), oldest first out.

    The queue is a buffer of this module, so it travels in ``state_dict()`` and the trainer saves it
    in every checkpoint (a known gap of lightly's memory bank). It is allocated at the first call,
    when the feature size is known, and only filled slots are used as negatives (no random init).
    Keys carry no gradient (they come from the momentum encoder; see :func:`momentum_update`).

    Under data parallelism every rank holds the same queue (it enqueues the same gathered keys), and
    each rank's loss is weighted by its share of the global batch, so the mean over ranks and DDP's
    gradient average equal one process with the whole batch.

    Args:
        queue_size: number of keys kept (65536 in the papers).
        temperature: 0.07 (v1) or 0.2 (v2, the default).
        normalize: L2-normalise queries and keys first.
        rank, world_size: override what ``torch.distributed`` reports (for tests).

    Shape:
        query (B, D) from the online encoder; key (B, D) from the momentum encoder. Returns a scalar.
    """

    pairing = "two_view"  # called as loss(query, key): image-image training
    needs_momentum_encoder = True  # keys come from the model's momentum encoder (model.momentum)

    def __init__(
        self,
        queue_size: int = 65536,
        temperature: float = 0.2,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size}")
        check_positive("temperature", temperature)
        check_rank_world(rank, world_size)
        self.queue_size, self.temperature, self.normalize = queue_size, temperature, normalize
        self._rank, self._world_size = rank, world_size
        self.register_buffer("queue", torch.empty(0, 0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "queue")
        if saved is not None and saved.shape != self.queue.shape:  # allocated lazily: take the saved shape
            self.queue = torch.empty_like(saved, device=self.queue.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (N, D) into the ring buffer, overwriting the oldest entries."""
        if self.queue.numel() == 0:
            self.queue = keys.new_zeros(self.queue_size, keys.shape[1])
        keys = keys[-self.queue_size :]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue_size)
        self.queue_len.copy_(torch.clamp(self.queue_len + keys.shape[0], max=self.queue_size))

    def negatives(self) -> torch.Tensor:
        """The filled part of the queue (order does not matter to the loss)."""
        return self.queue[: int(self.queue_len)]

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        check_two_views(query, key)
        rank, world = dist_info(self._rank, self._world_size)
        dtype = torch.promote_types(query.dtype, torch.float32)
        q, k = query.to(dtype), key.detach().to(dtype)
        if self.normalize:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        positives = (q * k).sum(dim=1, keepdim=True)
        if int(self.queue_len) == 0:  # first step: the positive only
            negatives = q.new_zeros(q.shape[0], 0)
        else:  # a snapshot: the queue is updated in place below, before the backward pass reads it
            negatives = q @ self.negatives().to(dtype, copy=True).T
        logits = torch.cat([positives, negatives], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        sizes = batch_sizes(q.shape[0], world, q.device)
        self.enqueue(gather_no_grad(k, sizes))
        return loss * (len(sizes) * q.shape[0] / sum(sizes))
