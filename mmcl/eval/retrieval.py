"""Cross-modal retrieval on a dataset with any number of captions per image."""

from __future__ import annotations

import torch

from .encode import encode_dataset
from .metrics import attribute_recall_at_1, duplicate_fraction, retrieval_metrics


def same_caption_same_embedding(text_features: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """``text_features`` with every repeat of a caption given the embedding of its first occurrence.

    A text tower's output for one caption can differ in its last bits with the batch it was encoded
    in (padding to the batch's longest caption, the shapes of the matrix multiplies), which would
    turn the exact ties between repeated captions into near-ties ordered by rounding noise. Repeated
    captions are the same input, so they get one embedding and tie exactly, and recall@k breaks the
    tie as CLIP_benchmark's ``torch.topk`` does (see :func:`~mmcl.eval.metrics.retrieval_metrics`).
    """
    first: dict[str, int] = {}
    source = [first.setdefault(c, i) for i, c in enumerate(captions)]
    if len(first) == len(captions):
        return text_features
    return text_features[torch.tensor(source, device=text_features.device)]


def retrieval_from_features(
    enc, ks: tuple[int, ...] = (1, 5, 10), progress: bool = False, optimistic: bool = False
) -> dict:
    """Retrieval metrics of encoded images and captions (:class:`~mmcl.eval.encode.Encoded`, every
    image with a caption): CLIP_benchmark's ``image_retrieval_recall@k`` / ``text_retrieval_recall@k``,
    mean and median ranks, ``num_images`` / ``num_texts``; with group keys, the attribute-level
    recall@1 and ``duplicate_caption_fraction``; ``skipped``.

    Repeated captions share one embedding (:func:`same_caption_same_embedding`). With
    ``optimistic``, also ``*_recall_optimistic@k`` and ``*_rank_optimistic``: ties resolved in the
    query's favour (see :func:`~mmcl.eval.metrics.retrieval_metrics`)."""
    text_features = same_caption_same_embedding(enc.text_features, enc.captions)
    metrics = retrieval_metrics(
        enc.image_features, text_features, enc.text_to_image, ks, progress=progress, optimistic=optimistic
    )
    metrics["num_images"], metrics["num_texts"] = enc.image_features.shape[0], enc.text_features.shape[0]
    if enc.image_groups is not None:
        metrics.update(attribute_recall_at_1(enc.image_features, text_features, enc.image_groups, enc.text_groups))
        metrics["duplicate_caption_fraction"] = duplicate_fraction(enc.text_groups)
    if enc.skipped:
        metrics["skipped"] = enc.skipped
    return metrics


def evaluate_retrieval(
    adapter,
    data,
    ks: tuple[int, ...] = (1, 5, 10),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    optimistic: bool = False,
) -> dict:
    """Retrieval on ``data`` (an :class:`~mmcl.data.evalsets.EvalDataset`), computed by streaming the
    score matrix (memory bounded by one tile); see :func:`retrieval_from_features`."""
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=True, progress=progress)
    return retrieval_from_features(enc, ks, progress, optimistic)
