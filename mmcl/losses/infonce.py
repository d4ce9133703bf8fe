"""Symmetric InfoNCE, the CLIP loss (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision"; van den Oord et al. 2018 for InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_chunk_size, check_rank_world
from ._chunked import chunked_row_cross_entropy, chunked_symmetric_infonce
from ._distributed import cross_modal_inputs, gather_text_negatives, gather_with_grad
from .base import ContrastiveLoss, register_loss


@register_loss("infonce")
class InfoNCELoss(ContrastiveLoss):
    """loss = (CE(s * X Y^T, I) + CE(s * Y X^T, I)) / 2 over the global batch.

    Under data parallelism each rank scores its B local rows against all W*B gathered columns
    (labels ``arange(B) + rank * B``), so the gradients DDP averages equal those of one process with
    batch W*B, and the mean of the ranks' values is that process's value.
    Logits are computed in fp32 (or fp64 for fp64 inputs) whatever the feature dtype.

    With ``text_negatives`` (hard-negative caption embeddings, NegCLIP, Yuksekgonul et al. 2023:
    one per pair, or M <= B per rank with ``data.negatives_fraction``) the image->text direction
    also scores every image against all the gathered negatives: ``CE(s * X [Y; N]^T, I)``; the
    text->image direction is unchanged.

    Args:
        label_smoothing: as in ``torch.nn.functional.cross_entropy``; 0 is plain CLIP.
        chunk_size: compute the logits this many rows at a time, forward and backward, so the
            (B x W*B) matrix is never held: peak extra memory O(chunk_size * W*B). None: dense.
        rank, world_size: override what ``torch.distributed`` reports (for tests).

    Shape:
        image_features, text_features: (B, D), L2-normalised. logit_scale: scalar, exponentiated.
        Returns a scalar.
    """

    pairing = "cross_modal"  # called as loss(image_features, text_features, logit_scale, logit_bias)
    takes_text_negatives = True  # NegCLIP-style hard-negative captions (data.negatives_key)

    def __init__(
        self,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        check_chunk_size(chunk_size)
        check_rank_world(rank, world_size)
        self.chunk_size = chunk_size
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._rank, self._world_size = rank, world_size

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        text_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        img, txt, rank, sizes = cross_modal_inputs(image_features, text_features, self._rank, self._world_size)
        all_img, all_txt = gather_with_grad(img, sizes), gather_with_grad(txt, sizes)
        scale = logit_scale.to(img.dtype)
        offset = sum(sizes[:rank])
        if text_negatives is not None:
            if self.chunk_size is not None:
                raise ValueError("text_negatives is not supported with chunk_size yet; set chunk_size: null")
            # NegCLIP: every image also meets every hard-negative caption of the global batch
            neg = gather_text_negatives(text_negatives, txt, len(sizes))
            all_txt = torch.cat([all_txt, neg])
        if self.chunk_size is not None and len(sizes) == 1:
            # One process: both directions from one pass over one logit matrix. (A constant bias
            # does not change a softmax cross-entropy, so the chunked paths ignore it.)
            total = chunked_symmetric_infonce(img, txt, scale, self.chunk_size, self.label_smoothing)
            return total / (2 * img.shape[0])
        if self.chunk_size is not None:
            # Several processes: local rows against all gathered columns, one direction at a time.
            total = chunked_row_cross_entropy(img, all_txt, scale, offset, self.chunk_size, self.label_smoothing)
            total = total + chunked_row_cross_entropy(
                txt, all_img, scale, offset, self.chunk_size, self.label_smoothing
            )
            return total * len(sizes) / (2 * sum(sizes))
        logits_per_image = scale * img @ all_txt.T
        logits_per_text = scale * txt @ all_img.T
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        labels = torch.arange(img.shape[0], device=img.device) + offset
        ce = lambda logits: F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)  # noqa: E731
        loss = (ce(logits_per_image) + ce(logits_per_text)) / 2
        # Weight by this rank's share so that DDP's mean over ranks is the global mean.
        return loss * (len(sizes) * img.shape[0] / sum(sizes))
