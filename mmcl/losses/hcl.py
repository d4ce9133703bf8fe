"""Hard negative contrastive loss, HCL (Robinson et al. 2021, "Contrastive Learning with Hard Negative
Samples"), which includes debiased contrastive learning (Chuang et al. 2020) at beta = 0."""

from __future__ import annotations

import math

import torch

from ._checks import check_positive, check_rank_world
from ._distributed import two_view_inputs
from .base import ContrastiveLoss, register_loss


@register_loss("hcl")
class HCLLoss(ContrastiveLoss):
    """Debiased, hardness-reweighted NT-Xent.

    Over the 2n views ``[z0; z1]`` of a global batch of n samples (L2-normalised inside), anchor i
    has the positive logit p = s_{i,pos(i)} / t and the M = 2n - 2 negative logits l_j = s_ij / t
    (all views but i and pos(i)). With importance weights exp(beta l_j)::

        R    = sum_j exp((1 + beta) l_j) / mean_j exp(beta l_j)
        Ng   = max( (R - tau_plus * M * exp(p)) / (1 - tau_plus),  M * exp(-1 / t) )
        l(i) = -log( exp(p) / (exp(p) + Ng) )
        loss = (1 / 2n) * sum_i l(i)

    Everything is computed in log space (``log R = lse((1 + beta) l) - lse(beta l) + log M``,
    ``log(R - a) = log R + log(-expm1(log a - log R))``), so large beta or identical embeddings give
    no inf or NaN. beta = 0 is debiased contrastive learning; beta = 0 and tau_plus = 0 is NT-Xent.

    Under data parallelism each rank scores its 2B views against all 2n gathered views (with
    gradient; M uses the global count) and returns ``sum_i l(i) * W / 2n``; the mean over ranks and
    DDP's gradient average are the whole-batch loss and gradient.

    Args:
        temperature: t, default 0.5.
        tau_plus: class prior (probability that a negative shares the anchor's class), in [0, 1);
            default 0.1.
        beta: hardness concentration, >= 0; default 1.0.
        normalize: L2-normalise the inputs first (default True).
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        z0, z1: (B, D), two views of the same B samples. Returns a scalar.
    """

    pairing = "two_view"  # called as loss(z0, z1): image-image training
    symmetric_views = True  # an image and its caption can be the two views (image-text training)

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        check_positive("temperature", temperature)
        if not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        if not beta >= 0.0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        check_rank_world(rank, world_size)
        self.temperature, self.tau_plus, self.beta = temperature, tau_plus, beta
        self.normalize = normalize
        self._rank, self._world_size = rank, world_size

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        anchors, columns, self_idx, pos_idx, sizes = two_view_inputs(
            z0, z1, self.normalize, self._rank, self._world_size
        )
        n = sum(sizes)
        if n < 2:
            raise ValueError("HCL needs at least two samples in the global batch (it has no negatives otherwise)")
        m = 2 * n - 2
        logits = anchors @ columns.T / self.temperature
        rows = torch.arange(logits.shape[0], device=logits.device)
        positive = logits[rows, pos_idx]
        drop = torch.zeros_like(logits, dtype=torch.bool)
        drop[rows, self_idx] = True
        drop[rows, pos_idx] = True
        lse_neg = lambda x: torch.logsumexp(x.masked_fill(drop, float("-inf")), dim=1)  # noqa: E731
        log_r = lse_neg((1 + self.beta) * logits) - lse_neg(self.beta * logits) + math.log(m)
        if self.tau_plus > 0:
            # log(R - a) with a = tau_plus * M * exp(p); the branch is used only where a < R.
            gap = math.log(self.tau_plus * m) + positive - log_r
            inside = gap < 0
            safe_gap = torch.where(inside, gap, torch.full_like(gap, -1.0))
            log_diff = log_r + torch.log(-torch.expm1(safe_gap))
            log_ng = torch.where(inside, log_diff, torch.full_like(log_diff, float("-inf")))
            log_ng = log_ng - math.log1p(-self.tau_plus)
        else:
            log_ng = log_r
        floor = torch.full_like(log_ng, math.log(m) - 1.0 / self.temperature)
        log_ng = torch.maximum(log_ng, floor)
        per_anchor = torch.logaddexp(positive, log_ng) - positive
        return per_anchor.sum() * (len(sizes) / (2 * n))
