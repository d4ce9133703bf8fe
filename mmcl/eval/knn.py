"""Weighted k-nearest-neighbour classification on cached, L2-normalised features.

This is the non-parametric probe of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric
Instance Discrimination"), the one lightly's ``knn_predict`` and most self-supervised codebases use to
monitor representations: each test item takes its ``k`` most similar training items (cosine similarity,
i.e. a dot product of unit vectors), weights each neighbour by ``exp(similarity / temperature)`` and sums
the weights per class. The class scores are returned, so top-k accuracy and per-class recall come from
the shared ``classification_metrics``.

Why here: it needs no training and no hyper-parameter search, so it is a cheap, deterministic read-out
of feature quality that complements the linear probe. Test items are processed in chunks, so memory is
O(chunk_size x N_train), never the full test x train similarity matrix.

The scores are computed in float32 (at least); ``exp(1 / temperature)`` overflows float32 for
temperatures below about 0.0113, so keep the temperature above that (0.07 and 0.1 are the usual values).
"""

from __future__ import annotations

import math

import torch

from .linear_probe import _check_labelled
from .metrics import classification_metrics


def _check_knn_args(k: int, temperature: float, chunk_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


def _chunk_scores(
    queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int, temperature: float, num_classes: int
) -> torch.Tensor:
    """(B, C) summed neighbour weights for one chunk of queries."""
    sims = (queries @ bank.T).float()
    top_sims, top_idx = sims.topk(k, dim=1)
    weights = (top_sims / temperature).exp()
    scores = torch.zeros(queries.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    return scores.scatter_add_(1, bank_labels[top_idx], weights)


def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted kNN class scores.

    Args:
        train_features: (N_train, D), L2-normalised (the similarity is the plain dot product).
        train_labels: (N_train,) integer class of each training item.
        test_features: (N_test, D), L2-normalised.
        k: neighbours per test item; ``min(k, N_train)`` are used.
        temperature: neighbour weight is ``exp(similarity / temperature)``.
        num_classes: number of score columns; default ``max(train_labels) + 1``.
        chunk_size: test items per similarity block.

    Returns:
        (N_test, num_classes) float scores on ``test_features``' device: per class, the summed weights of
        the neighbours of that class (0 for classes with no neighbour among the k).
    """
    _check_labelled(train_features, train_labels, "train")
    _check_knn_args(k, temperature, chunk_size)
    if test_features.ndim != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features must be (N_test, {train_features.shape[1]}) like train_features, "
            f"got shape {tuple(test_features.shape)}"
        )
    max_label = int(train_labels.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif num_classes <= max_label:
        raise ValueError(f"num_classes={num_classes} but train_labels contains class {max_label}")
    device = test_features.device
    bank = train_features.to(device)
    bank_labels = train_labels.to(device).long()
    k_eff = min(k, bank.shape[0])
    chunks = [
        _chunk_scores(test_features[s : s + chunk_size], bank, bank_labels, k_eff, temperature, num_classes)
        for s in range(0, test_features.shape[0], chunk_size)
    ]
    if not chunks:
        return torch.zeros(0, num_classes, device=device)
    return torch.cat(chunks)


def knn_metrics(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """CLIP_benchmark-named metrics of the weighted kNN classifier.

    Returns:
        "acc1", "acc5" (NaN with fewer than 5 classes), "mean_per_class_recall", plus "k" (the number of
        neighbours actually used, ``min(k, N_train)``) and "temperature".
    """
    _check_labelled(train_features, train_labels, "train")
    _check_labelled(test_features, test_labels, "test")
    num_classes = max(int(train_labels.max()), int(test_labels.max())) + 1
    scores = knn_classify(
        train_features, train_labels, test_features, k, temperature, num_classes=num_classes, chunk_size=chunk_size
    )
    out: dict[str, float] = classification_metrics(scores.cpu(), test_labels.cpu().long(), ks=(1, 5))
    out["k"] = min(k, train_features.shape[0])
    out["temperature"] = float(temperature)
    return out
