"""Zero-shot classification: a classifier built from class names x prompt templates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import classification_metrics


def read_lines(path) -> list[str]:
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def zero_shot_classifier(adapter, classnames: list[str], templates: list[str], batch_size: int = 256) -> torch.Tensor:
    """(D, C) weights: per class, the renormalised mean of its normalised template embeddings
    (CLIP_benchmark's and CLIP's construction)."""
    prompts = [t.format(c) if "{}" in t else t.replace("{c}", c) for c in classnames for t in templates]
    emb = torch.cat([adapter.encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)])
    emb = emb.view(len(classnames), len(templates), -1)
    return F.normalize(F.normalize(emb, dim=-1).mean(dim=1), dim=-1).T


def zero_shot_metrics(image_features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 and mean_per_class_recall on the items with label >= 0."""
    keep = labels >= 0
    if not keep.any():
        raise ValueError("no labelled items (label >= 0) for zero-shot classification")
    logits = 100.0 * image_features[keep] @ classifier
    out = classification_metrics(logits, labels[keep])
    out["num_items"] = int(keep.sum())
    return out
