"""Max-violation triplet ranking loss, VSE++ (Faghri et al. 2018, "VSE++: Improving Visual-Semantic
Embeddings with Hard Negatives")."""

from __future__ import annotations

import torch

from ._checks import check_rank_world
from ._distributed import cross_modal_inputs, gather_with_grad
from .base import ContrastiveLoss, register_loss


@register_loss("triplet")
class TripletLoss(ContrastiveLoss):
    """Cross-modal hinge on the hardest in-batch negative, in both directions.

    With s_ij = x_i . y_j over the global batch of n pairs::

        c_img(i) = max_{j != i} relu(margin + s_ij - s_ii)     # image anchor, hardest text
        c_txt(j) = max_{i != j} relu(margin + s_ij - s_jj)     # text anchor, hardest image
        loss = (1 / 2n) * (sum_i c_img(i) + sum_j c_txt(j))

    i.e. the MEAN over the 2n anchors. VSE++ (max-violation) SUMS these terms over the batch; its
    value is 2n times this one. ``logit_scale`` and ``logit_bias`` are accepted for the common loss
    contract and ignored.

    Under data parallelism each rank takes its B images and B texts as anchors against all n gathered
    texts / images (gathered with gradient), so the hardest negative is searched over the GLOBAL batch,
    and returns ``local_sum * W / 2n``; the mean over ranks and DDP's gradient average equal the
    whole-batch loss and gradient.

    Args:
        margin: default 0.2, must be >= 0.
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        image_features, text_features: (B, D), L2-normalised. Returns a scalar.
    """

    pairing = "cross_modal"  # called as loss(image_features, text_features, logit_scale, logit_bias)

    def __init__(self, margin: float = 0.2, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        check_rank_world(rank, world_size)
        self.margin = margin
        self._rank, self._world_size = rank, world_size

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        img, txt, rank, sizes = cross_modal_inputs(image_features, text_features, self._rank, self._world_size)
        n = sum(sizes)
        if n < 2:
            raise ValueError("the triplet loss needs at least two pairs in the global batch (no negatives otherwise)")
        all_img, all_txt = gather_with_grad(img, sizes), gather_with_grad(txt, sizes)
        rows = torch.arange(img.shape[0], device=img.device)
        cols = rows + sum(sizes[:rank])
        total = img.new_zeros(())
        for scores in (img @ all_txt.T, txt @ all_img.T):  # image anchors, then text anchors
            positive = scores[rows, cols]
            hardest = scores.index_put((rows, cols), torch.tensor(float("-inf"), dtype=img.dtype, device=img.device))
            total = total + torch.relu(self.margin + hardest.amax(dim=1) - positive).sum()
        return total * (len(sizes) / (2 * n))
