"""NT-Xent, the SimCLR loss (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_positive, check_rank_world
from ._distributed import two_view_inputs
from .base import ContrastiveLoss, register_loss


@register_loss("ntxent")
class NTXentLoss(ContrastiveLoss):
    """Normalised temperature-scaled cross entropy over the 2n views of a global batch of n samples.

    With the views laid out as ``[z0; z1]`` (2n rows, L2-normalised inside), s_ij = v_i . v_j and
    pos(i) the other view of sample i::

        l(i) = -log( exp(s_{i,pos(i)} / t) / sum_{k != i} exp(s_ik / t) )
        loss = (1 / 2n) * sum_i l(i)          # mean over the 2n ordered positive pairs

    The self-similarity is masked with -inf. This matches ``lightly.loss.NTXentLoss(temperature,
    gather_distributed=True)``, which also normalises its inputs.

    Under data parallelism each rank computes l(i) for its own 2B views against all 2n gathered views
    (gathered with gradient) and returns ``sum_i l(i) * W / 2n``: the mean over ranks is the global
    loss and DDP's gradient average is the whole-batch gradient, also for uneven per-rank batches.
    Computed in fp32 at least (fp64 inputs stay fp64).

    Args:
        temperature: t. Default 0.5 (lightly's default, SimCLR's CIFAR-10 setting); SimCLR on
            ImageNet with batch 4096 used 0.1.
        normalize: L2-normalise the inputs first (default True). Set False if they already are.
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        z0, z1: (B, D), the two views of the same B samples. Returns a scalar.
    """

    pairing = "two_view"  # called as loss(z0, z1): image-image training
    symmetric_views = True  # an image and its caption can be the two views (image-text training)

    def __init__(
        self,
        temperature: float = 0.5,
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
        dtype = anchors.dtype
        logits = anchors @ columns.T / self.temperature
        rows = torch.arange(logits.shape[0], device=logits.device)
        logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), dtype=dtype, device=logits.device))
        per_anchor = F.cross_entropy(logits, pos_idx, reduction="none")
        return per_anchor.sum() * (len(sizes) / (2 * sum(sizes)))
