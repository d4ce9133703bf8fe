"""Pure metric functions on tensors, with CLIP_benchmark's definitions and names.

Retrieval streams the caption x image score matrix in tiles, counting for each query how many
candidates score strictly higher than its best positive. Memory is O(tile), never the full matrix,
and ranks are exact (ties are resolved in the query's favour), so recall@k for every k and the
mean and median rank all come from one pass.
"""

from __future__ import annotations

import torch
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm


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


def _count_above(tile: torch.Tensor, row_thr: torch.Tensor, col_thr: torch.Tensor, mask: torch.Tensor):
    """Per row, scores above its row threshold; per column, scores above its column threshold.

    Eager: preallocated bool buffer and uint8 sums (the comparisons are memory-bound, the GEMM is not).
    """
    rows = torch.gt(tile, row_thr[:, None], out=mask).view(torch.uint8).sum(1, dtype=torch.int32)
    cols = torch.gt(tile, col_thr[None], out=mask).view(torch.uint8).sum(0, dtype=torch.int32)
    return rows, cols


def _count_above_fusable(tile: torch.Tensor, row_thr: torch.Tensor, col_thr: torch.Tensor):
    return (tile > row_thr[:, None]).sum(1, dtype=torch.int32), (tile > col_thr[None]).sum(0, dtype=torch.int32)


_COMPILED: dict = {}


def _fused_counter():
    """``_count_above`` compiled by TorchInductor into one pass over the tile (both comparisons
    and both sums), or None where torch.compile is unavailable. Compiling happens at the first
    call, about 20 s cold and a few seconds from Inductor's on-disk cache, so it is the default
    only for large problems."""
    if "fn" not in _COMPILED:
        import logging

        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" noise
        try:
            _COMPILED["fn"] = torch.compile(_count_above_fusable, dynamic=False)
        except Exception:  # noqa: BLE001 - torch.compile unsupported here: eager
            _COMPILED["fn"] = None
    return _COMPILED["fn"]


def retrieval_ranks(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    text_chunk: int | None = None,
    image_chunk: int | None = None,
    progress: bool = False,
    tie_tol: float = 1e-6,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the correct item in both directions, from one streamed pass over the scores.

    The (text x image) score matrix is computed tile by tile and never held whole: each tile
    updates both directions at once, so the cost is one matrix multiply plus two comparisons per
    score. A candidate outranks the positive only when it scores more than ``tie_tol`` above it:
    ties, and differences within floating-point rounding, go to the query.

    Tiles default to 256 captions x 4096 images on CPU, so the scores stay in cache, and 8192 x
    65536 on GPU. On CPU the two comparisons cost about half the multiply when run as separate
    torch ops, and much less when ``fused``: compiled by torch.compile into one pass (default: on
    CPU for problems of at least 1e10 scores, where the one-off compile time is small; eager if
    compiling fails). See ``evaluation/bench_retrieval.py``.

    Returns:
        t2i: (N_txt,) number of images scoring strictly higher than the caption's own image;
        i2t: (N_img,) number of captions scoring higher than the image's best-scoring caption
            (its other captions never do).
    """
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    device = image_features.device
    text_chunk = text_chunk or (256 if device.type == "cpu" else 8192)
    image_chunk = image_chunk or (4096 if device.type == "cpu" else 65536)
    text_to_image = text_to_image.long().to(device)
    if text_to_image.shape != (n_txt,):
        raise ValueError(f"text_to_image has shape {tuple(text_to_image.shape)}; expected ({n_txt},)")
    if n_txt and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_img):
        raise ValueError(f"text_to_image values must index the {n_img} images")
    if n_img and (n_txt == 0 or torch.bincount(text_to_image, minlength=n_img).min() == 0):
        raise ValueError("every image needs at least one caption in text_to_image")
    # Score of each caption with its own image, and of each image with its best caption, raised by
    # ``tie_tol``: tile scores come from a GEMM whose rounding differs from these dot products by
    # ~1e-7, so a candidate must beat the positive by more than that to outrank it. The positive
    # itself and an image's other captions therefore never count against it.
    positive = torch.cat(
        [  # in chunks: a full (N_txt, D) gather of image rows would double the features' memory
            (text_features[s : s + 65536] * image_features[text_to_image[s : s + 65536]]).sum(dim=1)
            for s in range(0, n_txt, 65536)
        ]
    )
    best = torch.full((n_img,), -float("inf"), device=device, dtype=positive.dtype)
    best = best.scatter_reduce(0, text_to_image, positive, reduce="amax") + tie_tol
    positive = positive + tie_tol
    t2i = torch.zeros(n_txt, dtype=torch.int32, device=device)
    i2t = torch.zeros(n_img, dtype=torch.int32, device=device)
    scores = torch.empty(min(text_chunk, n_txt), min(image_chunk, n_img), device=device, dtype=positive.dtype)
    above = torch.empty(scores.shape, device=device, dtype=torch.bool)
    if fused is None:
        fused = device.type == "cpu" and n_txt * n_img >= 1e10
    counter = _fused_counter() if fused else None
    for ts in tqdm(range(0, n_txt, text_chunk), desc="retrieval", disable=not progress, leave=False):
        texts = text_features[ts : ts + text_chunk]
        te = ts + texts.shape[0]
        for is_ in range(0, n_img, image_chunk):
            images = image_features[is_ : is_ + image_chunk]
            ie = is_ + images.shape[0]
            tile = torch.mm(texts, images.T, out=scores[: texts.shape[0], : images.shape[0]])
            rows = None
            if counter is not None and tile.shape == scores.shape:  # edge tiles: eager, no recompiles
                try:
                    rows, cols = counter(tile, positive[ts:te], best[is_:ie])
                except Exception as e:  # noqa: BLE001 - no C++ compiler or similar: eager from now on
                    _COMPILED["fn"], _COMPILED["error"], counter = None, repr(e), None
            if rows is None:
                rows, cols = _count_above(tile, positive[ts:te], best[is_:ie], above[: tile.shape[0], : tile.shape[1]])
            t2i[ts:te] += rows
            i2t[is_:ie] += cols
    return t2i.long().cpu(), i2t.long().cpu()


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int | None = None,
    image_chunk: int | None = None,
    progress: bool = False,
    fused: bool | None = None,
) -> dict[str, float]:
    """Cross-modal retrieval with any number of captions per image.

    Args:
        image_features: (N_img, D), L2-normalised.
        text_features: (N_txt, D), L2-normalised.
        text_to_image: (N_txt,) index of each caption's image.
        chunk_size, image_chunk, fused: captions and images per score tile, and whether to fuse
            the comparisons with torch.compile (see :func:`retrieval_ranks`).

    Returns:
        image_retrieval_recall@k: mean over captions of [its image is in the top k images];
        text_retrieval_recall@k: mean over images of [any of its captions is in the top k captions];
        plus the mean and median (1-based) rank of the first correct item in each direction.
    """
    t2i_rank, i2t_rank = retrieval_ranks(
        image_features, text_features, text_to_image, chunk_size, image_chunk, progress, fused=fused
    )
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
