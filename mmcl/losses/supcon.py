"""Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_positive, check_rank_world, check_two_views
from ._distributed import batch_sizes, dist_info, gather_no_grad, gather_with_grad, two_view_layout
from .base import ContrastiveLoss, register_loss


@register_loss("supcon")
class SupConLoss(ContrastiveLoss):
    """SupCon "L_out": the mean over positives is taken outside the log.

    Over the V*n views of a global batch (V = 2 views ``[z0; z1]``, or V = 1 when ``z1`` is None),
    L2-normalised inside, with A(i) = all views but i and P(i) = views in A(i) with i's label::

        l(i) = -(t / t_base) * (1 / |P(i)|) * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )
        loss = (1 / (V n)) * sum_i l(i)

    Anchors with no positive (possible only with a single view) contribute l(i) = 0 and still count
    in the V*n of the mean, as in the authors' code. With all labels distinct and t_base = t this is
    NT-Xent. The self-similarity is masked with -inf.

    Under data parallelism features are gathered with gradient, labels without; each rank scores its
    own views against all gathered views and returns ``sum_i l(i) * W / (V n)``, so the mean over
    ranks and DDP's gradient average equal the whole-batch loss and gradient.

    Args:
        temperature: t, default 0.1.
        base_temperature: t_base, default 0.1 (the ``t / t_base`` factor is then 1).
        normalize: L2-normalise the inputs first (default True).
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        z0: (B, D); z1: (B, D) or None; labels: (B,) integer class labels. Returns a scalar.
    """

    pairing = "two_view"  # called as loss(z0, z1): image-image training
    needs_labels = True  # called as loss(z0, z1, labels)

    def __init__(
        self,
        temperature: float = 0.1,
        base_temperature: float = 0.1,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        check_positive("temperature", temperature)
        check_positive("base_temperature", base_temperature)
        check_rank_world(rank, world_size)
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.normalize = normalize
        self._rank, self._world_size = rank, world_size

    def forward(self, z0: torch.Tensor, z1: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        if z1 is not None:
            check_two_views(z0, z1)
        elif z0.dim() != 2:
            raise ValueError(f"expected z0 of shape (B, D), got {tuple(z0.shape)}")
        if labels.shape != (z0.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"expected integer labels of shape ({z0.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
            )
        rank, world = dist_info(self._rank, self._world_size)
        dtype = torch.promote_types(z0.dtype, torch.float32)
        z0 = z0.to(dtype)
        z0 = F.normalize(z0, dim=-1) if self.normalize else z0
        if z1 is not None:
            z1 = z1.to(dtype)
            z1 = F.normalize(z1, dim=-1) if self.normalize else z1
            anchors, columns, self_idx, _, sizes = two_view_layout(z0, z1, rank, world)
            all_labels = gather_no_grad(labels, sizes)
            col_labels, anchor_labels = all_labels.repeat(2), labels.repeat(2)
        else:
            sizes = batch_sizes(z0.shape[0], world, z0.device)
            anchors, columns = z0, gather_with_grad(z0, sizes)
            self_idx = torch.arange(z0.shape[0], device=z0.device) + sum(sizes[:rank])
            col_labels, anchor_labels = gather_no_grad(labels, sizes), labels
        n_views = (1 if z1 is None else 2) * sum(sizes)
        if n_views < 2:
            raise ValueError("SupCon needs at least two views in the global batch")
        logits = anchors @ columns.T / self.temperature
        rows = torch.arange(logits.shape[0], device=logits.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool).index_put(
            (rows, self_idx), torch.tensor(True, device=logits.device)
        )
        logits = logits.masked_fill(is_self, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positive = (anchor_labels[:, None] == col_labels[None, :]) & ~is_self
        n_pos = positive.sum(dim=1)
        pos_sum = torch.where(positive, log_prob, torch.zeros((), dtype=dtype, device=logits.device)).sum(dim=1)
        per_anchor = -(self.temperature / self.base_temperature) * pos_sum / n_pos.clamp(min=1)
        return per_anchor.sum() * (len(sizes) / n_views)
