"""Cluster-guided InfoNCE: symmetric InfoNCE whose negatives are shaped by clusters of BOTH
modalities' embeddings in the shared space (mmcl's formulation, after ClusterNS and CM-CGNS; see
``../shared/METHODS.md`` and :mod:`mmcl.negatives.clusters`).

Once the centroids have started (warm-up gate), with ``cid(x)`` the cluster of an embedding:

- **False negatives** (``false_negatives="mask"``): a pair (i, j != i) with
  ``cid(image_i) == cid(text_j)`` is a likely match, not a negative. Its logit is set to -inf in
  both directions; the positive is always kept.
- **Hard negatives** (``hard_negatives=n``, ``hard_log_weight=a``): a pair whose column lies in one
  of the ``n`` clusters nearest to the row's own cluster gets ``+a`` added to its logit, i.e.
  weight ``e^a`` in the softmax denominator.
- **Centroid columns** (``centroid_columns=True``): each row also sees, as one extra negative
  column, its second-nearest centroid (detached), scaled like the other logits, plus ``a``
  (ClusterNS's hard negative).

With all three off, or before the gate opens, the loss equals :class:`InfoNCELoss`. The centroids
are updated after each training-mode call, from the features gathered over all ranks, so every
rank holds the same centroids. ``last_stats`` reports cluster health: how often an image shares
a cluster with its own caption, how many pairs were masked, and the number of clusters in use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..negatives.clusters import SharedSpaceCentroids
from ._checks import check_rank_world
from ._distributed import cross_modal_inputs, gather_no_grad, gather_with_grad
from .base import register_loss


@register_loss("cluster_infonce")
class ClusterGuidedInfoNCE(nn.Module):
    """Args:
    k, momentum, gate: the shared-space centroids (ClusterNS defaults 128, 1e-3, 0.4).
    mode: ``"online"`` (momentum update every step) or ``"periodic"`` (k-means over an embedding
        bank of ``bank_size`` rows every ``recluster_every`` steps).
    false_negatives: ``"mask"`` (default) or ``"none"``.
    hard_negatives: how many neighbouring clusters count as hard (0: off).
    hard_log_weight: the log-weight added to hard-negative logits (0: off).
    centroid_columns: add each row's second-nearest centroid as an extra negative column.
    rank, world_size: override what ``torch.distributed`` reports (for tests).

    Shape:
        image_features, text_features: (B, D), L2-normalised. logit_scale: scalar. Returns a scalar.
    """

    pairing = "cross_modal"

    def __init__(
        self,
        k: int = 128,
        momentum: float = 1e-3,
        gate: float = 0.4,
        false_negatives: str = "mask",
        hard_negatives: int = 0,
        hard_log_weight: float = 0.0,
        centroid_columns: bool = False,
        mode: str = "online",
        bank_size: int = 4096,
        recluster_every: int = 100,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if false_negatives not in ("mask", "none"):
            raise ValueError(f"false_negatives must be 'mask' or 'none', got {false_negatives!r}")
        if hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {hard_negatives}")
        check_rank_world(rank, world_size)
        self.centroids = SharedSpaceCentroids(k, momentum, gate, mode, bank_size, recluster_every)
        self.batch_ids: torch.Tensor | None = None  # the trainer sets this batch's sample ids (bank)
        self.false_negatives, self.hard_negatives = false_negatives, hard_negatives
        self.hard_log_weight, self.centroid_columns = hard_log_weight, centroid_columns
        self._rank, self._world_size = rank, world_size
        self.last_stats: dict[str, float] = {}

    def _shape(self, logits, row_ids, col_ids, positives, neighbours):
        """Apply the policies to one direction's (rows x all columns) logits."""
        if self.false_negatives == "mask":
            same = (row_ids[:, None] == col_ids[None, :]) & ~positives
            logits = logits.masked_fill(same, float("-inf"))
        if neighbours is not None:
            hard = (neighbours[row_ids][:, :, None] == col_ids[None, None, :]).any(1) & ~positives
            logits = logits + self.hard_log_weight * hard.to(logits.dtype)
        return logits

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        img, txt, rank, sizes = cross_modal_inputs(image_features, text_features, self._rank, self._world_size)
        all_img, all_txt = gather_with_grad(img, sizes), gather_with_grad(txt, sizes)
        scale = logit_scale.to(img.dtype)
        offset, n = sum(sizes[:rank]), img.shape[0]
        logits_i = scale * img @ all_txt.T
        logits_t = scale * txt @ all_img.T
        if logit_bias is not None:
            logits_i, logits_t = logits_i + logit_bias, logits_t + logit_bias
        labels = torch.arange(n, device=img.device) + offset
        ids = self.batch_ids
        if ids is not None and len(sizes) > 1:
            ids = gather_no_grad(ids.to(img.device), sizes)
        if not self.centroids.started and self.training:
            self.centroids.observe(all_img, all_txt, ids)  # the gate may open on this very batch
            observed = True
        else:
            observed = False
        if self.centroids.started:
            c = self.centroids
            ids_img, ids_txt = c.assign(all_img.detach()), c.assign(all_txt.detach())
            positives = torch.zeros(n, sum(sizes), dtype=torch.bool, device=img.device)
            positives[torch.arange(n), labels] = True
            use_hard = self.hard_negatives > 0 and self.hard_log_weight != 0
            neighbours = c.neighbours(self.hard_negatives).to(img.device) if use_hard else None
            rows = slice(offset, offset + n)
            logits_i = self._shape(logits_i, ids_img[rows], ids_txt, positives, neighbours)
            logits_t = self._shape(logits_t, ids_txt[rows], ids_img, positives, neighbours)
            if self.centroid_columns:
                logits_i = torch.cat([logits_i, self._centroid_column(img, scale)], 1)
                logits_t = torch.cat([logits_t, self._centroid_column(txt, scale)], 1)
            self.last_stats = {
                "cluster_agreement": float((ids_img == ids_txt).float().mean()),
                "masked_pairs": float(torch.isinf(logits_i).sum()) / max(1, n),
                "clusters_used": float(torch.unique(torch.cat([ids_img, ids_txt])).numel()),
            }
        loss = (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2
        if self.training and self.centroids.started and not observed:
            self.centroids.observe(all_img, all_txt, ids)
        self.batch_ids = None
        # Weight by this rank's share so that DDP's mean over ranks is the global mean.
        return loss * (len(sizes) * n / sum(sizes))

    def _centroid_column(self, x, scale):
        """The logit of each row against its second-nearest centroid (detached), plus the hard weight."""
        cents = self.centroids.centroids.to(x.dtype)
        second = (x.detach() @ cents.T).topk(2, dim=1).indices[:, 1]
        return (scale * (x * cents[second]).sum(1) + self.hard_log_weight)[:, None]
