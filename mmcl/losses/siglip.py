"""Sigmoid loss for image-text pretraining, SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_chunk_size, check_rank_world
from ._chunked import chunked_sigmoid_loss
from ._distributed import cross_modal_inputs, gather_with_grad
from .base import ContrastiveLoss, register_loss


@register_loss("siglip")
class SigLipLoss(ContrastiveLoss):
    """Pairwise sigmoid loss over every image-text pair of the global batch of n pairs::

        loss = -(1 / n) * sum_{i, j} log_sigmoid( z_ij * (scale * x_i . y_j + bias) )

    with z_ij = +1 on the matching pair (i = j) and -1 elsewhere. ``log_sigmoid`` is used directly,
    never ``log(sigmoid())``. Equal to ``open_clip.loss.SigLipLoss()`` in one process (value and
    gradients). The paper initialises scale = 10 (log-scale ln 10) and bias = -10; both are the
    caller's learnable parameters, passed in per call.

    Under data parallelism each rank scores its B local images against all n gathered texts
    (gathered with gradient) and returns ``local_sum * W / n``, so the mean over ranks and DDP's
    gradient average equal the whole-batch loss and gradients (uneven per-rank batches included).
    Logits are computed in fp32 at least (fp64 inputs stay fp64).

    Args:
        chunk_size: score this many rows at a time, forward and backward, so the (B x W*B) logit
            matrix is never held (peak extra memory O(chunk_size * W*B)). None: dense.
        rank, world_size: override what ``torch.distributed`` reports (for tests); both or neither.

    Shape:
        image_features, text_features: (B, D), L2-normalised. logit_scale: scalar, already
        exponentiated. logit_bias: scalar (required). Returns a scalar.
    """

    pairing = "cross_modal"  # called as loss(image_features, text_features, logit_scale, logit_bias)
    needs_bias = True  # the model must carry a learnable logit bias

    def __init__(self, chunk_size: int | None = None, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        check_rank_world(rank, world_size)
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self._rank, self._world_size = rank, world_size

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if logit_bias is None:
            raise ValueError("SigLIP needs logit_bias (a learnable scalar, initialised at -10); got None")
        img, txt, rank, sizes = cross_modal_inputs(image_features, text_features, self._rank, self._world_size)
        dtype = img.dtype
        all_txt = gather_with_grad(txt, sizes)
        scale = torch.as_tensor(logit_scale, device=img.device).to(dtype)  # a float is accepted too
        bias = torch.as_tensor(logit_bias, device=img.device).to(dtype)
        if self.chunk_size is not None:
            total = chunked_sigmoid_loss(img, all_txt, scale, bias, sum(sizes[:rank]), self.chunk_size)
            return total * (len(sizes) / sum(sizes))
        logits = scale * img @ all_txt.T + bias
        rows = torch.arange(img.shape[0], device=img.device)
        signs = -torch.ones_like(logits)
        signs[rows, rows + sum(sizes[:rank])] = 1.0
        return -F.logsigmoid(signs * logits).sum() * (len(sizes) / sum(sizes))
