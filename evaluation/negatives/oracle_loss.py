"""The evidence benchmark's false-negative oracle: symmetric InfoNCE with EXACTLY the true false
negatives of the corpus masked, read from its known truth (not something a user has). It measures
the ceiling of false-negative masking on this corpus: no detector can do better than the truth.

Registered as loss ``fn_oracle`` when imported. ``bench_negatives.py`` imports it in its own process
and starts ``mmcl`` with it loaded (the ``oracle`` arm). Training runs on one process only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F

from mmcl.losses import ContrastiveLoss, register_loss

TRAIN_CSV = Path(__file__).resolve().parents[2] / "data" / "shapes-fn" / "train.csv"


def corpus_truth(path: Path = TRAIN_CSV) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``bench_negatives.truth_tables`` of every training row (row index = sample id)."""
    from bench_negatives import truth_tables

    with open(path, newline="") as f:
        return truth_tables(list(csv.DictReader(f)))


@register_loss("fn_oracle")
class OracleMaskedInfoNCE(ContrastiveLoss):
    """InfoNCE whose in-batch false negatives (known from the corpus) are out of both softmaxes:
    caption j is true of image i iff (j is short) ? same short description : same full description."""

    pairing = "cross_modal"
    batch_inputs = ("index",)  # the sample ids: which rows' captions are true of which images

    def set_batch(self, inputs: dict) -> None:
        self.batch_ids = inputs.get("index")

    def __init__(self):
        super().__init__()
        self.full, self.short, self.is_short = corpus_truth()
        self.batch_ids: torch.Tensor | None = None  # each batch's row ids (set_batch)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        if self.batch_ids is None:
            raise ValueError("fn_oracle needs the batch's row ids (the trainer sets loss.batch_ids)")
        ids = self.batch_ids.long().cpu()
        self.batch_ids = None
        from bench_negatives import true_pairs

        true = true_pairs(self.full[ids], self.short[ids], self.is_short[ids])
        n = ids.numel()
        false_neg = (true & ~torch.eye(n, dtype=torch.bool)).to(image_features.device)
        logits = logit_scale * image_features @ text_features.T
        if logit_bias is not None:
            logits = logits + logit_bias
        labels = torch.arange(n, device=logits.device)
        i2t = F.cross_entropy(logits.masked_fill(false_neg, float("-inf")), labels)
        t2i = F.cross_entropy(logits.T.masked_fill(false_neg.T, float("-inf")), labels)
        self.last_stats = {"masked_pairs": float(false_neg.sum()) / max(1, n)}
        return (i2t + t2i) / 2
