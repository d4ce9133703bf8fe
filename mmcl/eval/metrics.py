"""Pure metric functions on tensors, with CLIP_benchmark's definitions and names.

Retrieval is computed in chunks of queries, counting for each query how many candidates score
strictly higher than its best positive. Memory is O(chunk x candidates), never the full matrix,
and ranks are exact (ties are resolved in the query's favour).
"""

from __future__ import annotations

import torch
from sklearn.metrics import balanced_accuracy_score


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy ("acc1", "acc5", ...) and "mean_per_class_recall" (balanced accuracy).

    As in CLIP_benchmark, acc-k is NaN when there are fewer than k classes.
    """
    out: dict[str, float] = {}
    n_classes = logits.shape[1]
    for k in ks:
        if k > n_classes:
            out[f"acc{k}"] = float("nan")
            continue
        topk = logits.topk(k, dim=1).indices
        out[f"acc{k}"] = int((topk == targets[:, None]).any(dim=1).sum()) / targets.shape[0]
    out["mean_per_class_recall"] = float(balanced_accuracy_score(targets.cpu().numpy(), logits.argmax(1).cpu().numpy()))
    return out


def _best_positive_ranks(
    queries: torch.Tensor, candidates: torch.Tensor, positives: list[torch.Tensor], chunk_size: int
) -> torch.Tensor:
    """0-based rank of each query's highest-scoring positive among all candidates."""
    ranks = torch.empty(queries.shape[0], dtype=torch.long)
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size]
        scores = q @ candidates.T
        best = torch.stack([scores[i, positives[start + i]].max() for i in range(q.shape[0])])
        ranks[start : start + q.shape[0]] = (scores > best[:, None]).sum(dim=1).cpu()
    return ranks


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Cross-modal retrieval with any number of captions per image.

    Args:
        image_features: (N_img, D), L2-normalised.
        text_features: (N_txt, D), L2-normalised.
        text_to_image: (N_txt,) index of each caption's image.

    Returns:
        image_retrieval_recall@k: mean over captions of [its image is in the top k images];
        text_retrieval_recall@k: mean over images of [any of its captions is in the top k captions];
        plus the mean and median (1-based) rank of the first correct item in each direction.
    """
    text_to_image = text_to_image.long().cpu()
    n_img = image_features.shape[0]
    t2i_pos = [t.view(1) for t in text_to_image]
    i2t_pos = [torch.nonzero(text_to_image == i).flatten() for i in range(n_img)]
    if any(p.numel() == 0 for p in i2t_pos):
        raise ValueError("every image needs at least one caption in text_to_image")
    t2i_rank = _best_positive_ranks(text_features, image_features, t2i_pos, chunk_size)
    i2t_rank = _best_positive_ranks(image_features, text_features, i2t_pos, chunk_size)
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = (t2i_rank < k).float().mean().item()
        out[f"text_retrieval_recall@{k}"] = (i2t_rank < k).float().mean().item()
    out["image_retrieval_mean_rank"] = (t2i_rank + 1).float().mean().item()
    out["image_retrieval_median_rank"] = (t2i_rank + 1).float().median().item()
    out["text_retrieval_mean_rank"] = (i2t_rank + 1).float().mean().item()
    out["text_retrieval_median_rank"] = (i2t_rank + 1).float().median().item()
    return out


def top1_indices(queries: torch.Tensor, candidates: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Index of each query's highest-scoring candidate, computed in chunks."""
    return torch.cat(
        [
            (queries[s : s + chunk_size] @ candidates.T).argmax(dim=1).cpu()
            for s in range(0, queries.shape[0], chunk_size)
        ]
    )


def attribute_recall_at_1(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_keys: list[str],
    text_keys: list[str],
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@1 where a hit is any retrieved item that means the same thing (equal key), so
    duplicates in the evaluation set are not counted as errors."""
    t2i = top1_indices(text_features, image_features, chunk_size)
    i2t = top1_indices(image_features, text_features, chunk_size)
    return {
        "image_retrieval_attribute_recall@1": sum(image_keys[j] == text_keys[i] for i, j in enumerate(t2i.tolist()))
        / len(text_keys),
        "text_retrieval_attribute_recall@1": sum(text_keys[j] == image_keys[i] for i, j in enumerate(i2t.tolist()))
        / len(image_keys),
    }


def duplicate_fraction(keys: list[str]) -> float:
    """Fraction of items whose key occurs more than once."""
    from collections import Counter

    counts = Counter(keys)
    return sum(1 for k in keys if counts[k] > 1) / max(1, len(keys))
