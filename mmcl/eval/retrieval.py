"""Cross-modal retrieval on a dataset with any number of captions per image."""

from __future__ import annotations

from .encode import encode_dataset
from .metrics import retrieval_metrics


def evaluate_retrieval(
    adapter,
    data,
    ks: tuple[int, ...] = (1, 5, 10),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """CLIP_benchmark's ``image_retrieval_recall@k`` / ``text_retrieval_recall@k`` plus mean and
    median ranks, computed by streaming the score matrix (memory bounded by one tile)."""
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=True, progress=progress)
    metrics = retrieval_metrics(enc.image_features, enc.text_features, enc.text_to_image, ks, progress=progress)
    metrics["num_images"], metrics["num_texts"] = enc.image_features.shape[0], enc.text_features.shape[0]
    if enc.skipped:
        metrics["skipped"] = enc.skipped
    return metrics
