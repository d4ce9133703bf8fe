"""Decoupled contrastive learning, DCL and DCLW (Yeh et al. 2022, "Decoupled Contrastive Learning")."""

from __future__ import annotations

import torch

from ._checks import check_positive, check_rank_world
from ._distributed import two_view_inputs
from .base import ContrastiveLoss, register_loss


@register_loss("dcl")
class DCLLoss(ContrastiveLoss):
    """NT-Xent with the positive removed from the denominator ("decoupled").

    Over the 2n views ``[z0; z1]`` of a global batch of n samples (L2-normalised inside), with pos(i)
    the other view of sample i and N(i) the 2n - 2 views that are neither i nor pos(i)::

        l(i) = -w_i * s_{i,pos(i)} / t + log sum_{k in N(i)} exp(s_ik / t)
        loss = (1 / 2n) * sum_i l(i)

    DCL has w_i = 1. The loss can be negative. Values match ``lightly.loss.DCLLoss`` (and
    ``DCLWLoss``) in one process.

    Under data parallelism each rank scores its 2B views against all 2n gathered views (with
    gradient) and returns ``sum_i l(i) * W / 2n``; the mean over ranks and DDP's gradient average are
    the whole-batch loss and gradient.

    Args:
        temperature: t, default 0.1 (lightly's default).
        normalize: L2-normalise the inputs first (default True).
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        z0, z1: (B, D), two views of the same B samples. Returns a scalar.
    """

    pairing = "two_view"  # called as loss(z0, z1): image-image training
    symmetric_views = True  # an image and its caption can be the two views (image-text training)

    weighted = False

    def __init__(
        self,
        temperature: float = 0.1,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        check_positive("temperature", temperature)
        check_rank_world(rank, world_size)
        self.temperature = temperature
        self.normalize = normalize
        self._rank, self._world_size = rank, world_size

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        anchors, columns, self_idx, pos_idx, sizes = two_view_inputs(
            z0, z1, self.normalize, self._rank, self._world_size
        )
        n = sum(sizes)
        if n < 2:
            raise ValueError("DCL needs at least two samples in the global batch (it has no negatives otherwise)")
        logits = anchors @ columns.T / self.temperature
        rows = torch.arange(logits.shape[0], device=logits.device)
        positive = logits[rows, pos_idx]
        if self.weighted:
            # w = 2 - n * softmax(s_ii' / sigma) over the n samples of the GLOBAL batch, detached.
            with torch.no_grad():
                sim = (columns[:n] * columns[n:]).sum(dim=-1) / self.sigma
                weight = 2 - n * torch.softmax(sim, dim=0)
            positive = positive * weight[self_idx % n]
        drop = torch.zeros_like(logits, dtype=torch.bool)
        drop[rows, self_idx] = True
        drop[rows, pos_idx] = True
        negative = torch.logsumexp(logits.masked_fill(drop, float("-inf")), dim=1)
        return (negative - positive).sum() * (len(sizes) / (2 * n))


@register_loss("dclw")
class DCLWLoss(DCLLoss):
    """DCL with the positive weighted by the negative von Mises-Fisher weight (Yeh et al. 2022).

    ``w_i = 2 - n * softmax_i(s_{i,i'} / sigma)``, the softmax over the n samples of the global batch
    (so it is exact under data parallelism), detached from the graph; otherwise as :class:`DCLLoss`.

    Args:
        temperature: t, default 0.1.
        sigma: default 0.5.
        normalize, rank, world_size: as :class:`DCLLoss`.
    """

    weighted = True

    def __init__(
        self,
        temperature: float = 0.1,
        sigma: float = 0.5,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__(temperature=temperature, normalize=normalize, rank=rank, world_size=world_size)
        check_positive("sigma", sigma)
        self.sigma = sigma
