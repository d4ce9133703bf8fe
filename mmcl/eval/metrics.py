"""Pure metric functions on tensors, with CLIP_benchmark's definitions and names.

Retrieval streams the caption x image score matrix in tiles (memory O(tile), never the whole
matrix), counting for each query the candidates that score above its best positive and those tied
with it. Recall@k equals CLIP_benchmark's, ties included: where a tie straddles the k-th place,
which tied candidates make the top k is what ``torch.topk`` makes it, so for those queries alone
the score row is rebuilt and ``torch.topk`` itself decides (see :func:`retrieval_metrics`).
"""

from __future__ import annotations

import warnings

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
    with warnings.catch_warnings():
        # A prediction of a class absent from the targets (a few test items, many classes) is a plain
        # error counted as such; sklearn's warning about it would repeat at every evaluation.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true", category=UserWarning)
        recall = balanced_accuracy_score(targets.cpu().numpy(), logits.argmax(1).cpu().numpy())
    out["mean_per_class_recall"] = float(recall)
    return out


def _count_true(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """True values per row (``dim`` 1) or per column (``dim`` 0) of a 2-D bool tensor, as int32.

    On CPU, with a contiguous mask whose rows are a whole number of 8-byte words, 8 booleans are
    added per int64 addition: summing at most 255 words leaves each byte holding the count of its
    own lane, with no carry into the next, so the bytes of the sums are the counts. This makes the
    reductions about 5x cheaper than summing bytes; the comparisons remain."""
    rows, cols = mask.shape
    if mask.device.type != "cpu" or not mask.is_contiguous() or cols % 8:
        return mask.view(torch.uint8).sum(dim, dtype=torch.int32)
    words = mask.view(torch.int64)  # (rows, cols // 8)
    if dim == 1:
        parts = [words[:, s : s + 255].sum(1) for s in range(0, words.shape[1], 255)]
        return torch.stack(parts, 1).view(torch.uint8).sum(1, dtype=torch.int32)
    counts = torch.zeros(cols, dtype=torch.int32)
    for s in range(0, rows, 255):
        counts += words[s : s + 255].sum(0).view(torch.uint8)
    return counts


def _count(tile: torch.Tensor, row_hi, row_lo, col_hi, col_lo, mask: torch.Tensor):
    """Per row of the tile, scores above its ``row_hi`` and scores at least its ``row_lo``; per column
    the same against ``col_hi`` / ``col_lo``.

    Eager: a preallocated bool buffer and word-wise counts (the comparisons are memory-bound, the
    GEMM is not).
    """

    def count(op, thr, dim):
        return _count_true(op(tile, thr, out=mask), dim)

    return (
        count(torch.gt, row_hi[:, None], 1),
        count(torch.ge, row_lo[:, None], 1),
        count(torch.gt, col_hi[None], 0),
        count(torch.ge, col_lo[None], 0),
    )


def _count_fusable(tile: torch.Tensor, row_hi, row_lo, col_hi, col_lo):
    return (
        (tile > row_hi[:, None]).sum(1, dtype=torch.int32),
        (tile >= row_lo[:, None]).sum(1, dtype=torch.int32),
        (tile > col_hi[None]).sum(0, dtype=torch.int32),
        (tile >= col_lo[None]).sum(0, dtype=torch.int32),
    )


_COMPILED: dict = {}


def _fused_counter():
    """``_count`` compiled by TorchInductor into one pass over the tile (all four comparisons and
    sums), or None where torch.compile is unavailable. Compiling happens at the first call, about
    20 s cold and a few seconds from Inductor's on-disk cache, so it is the default only for large
    problems."""
    if "fn" not in _COMPILED:
        import logging

        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" noise
        try:
            _COMPILED["fn"] = torch.compile(_count_fusable, dynamic=False)
        except Exception:  # noqa: BLE001 - torch.compile unsupported here: eager
            _COMPILED["fn"] = None
    return _COMPILED["fn"]


class _FullFloat32Matmul:
    """Float32 matrix products in full precision (no TF32) inside the block: the scores must be
    those of an exact float32 multiply, as CLIP_benchmark computes them on the CPU, and within the
    tie tolerance of the positives' dot products."""

    def __enter__(self):
        self.saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.saved)


def _tie_tolerance(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """How far apart two scores of the same pair may come out of different float computations (a
    tile of the GEMM, an elementwise dot product, a GEMM of another shape): 16 units of rounding at
    the largest possible score. Measured differences are below 3 units for D = 16 .. 1536."""
    if not image_features.numel() or not text_features.numel():
        return 0.0
    eps = torch.finfo(image_features.dtype).eps
    scale = image_features.norm(dim=1).max() * text_features.norm(dim=1).max()
    return 16 * eps * float(scale)


def _stream_counts(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    text_chunk: int | None,
    image_chunk: int | None,
    progress: bool,
    fused: bool | None,
    tol: float,
) -> dict[str, torch.Tensor]:
    """One streamed pass over the (text x image) scores; per query, the candidates scoring more than
    ``tol`` above its best positive (``*_above``) and those within ``tol`` of it (``*_near``,
    positives included). Also the positives' dot products (``positive``, per caption) and each
    image's best (``best``)."""
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    device = image_features.device
    text_chunk = text_chunk or (256 if device.type == "cpu" else 8192)
    image_chunk = image_chunk or (4096 if device.type == "cpu" else 65536)
    if text_to_image.shape != (n_txt,):
        raise ValueError(f"text_to_image has shape {tuple(text_to_image.shape)}; expected ({n_txt},)")
    if n_txt and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_img):
        raise ValueError(f"text_to_image values must index the {n_img} images")
    if n_img and (n_txt == 0 or torch.bincount(text_to_image, minlength=n_img).min() == 0):
        raise ValueError("every image needs at least one caption in text_to_image")
    # Each caption's score with its own image, and each image's best caption. The tiles come from a
    # GEMM whose rounding differs from these dot products (by < 3 units of rounding), so scores are
    # compared with a margin of ``tol``: a candidate within it counts as tied, never as above.
    positive = torch.cat(
        [  # in chunks: a full (N_txt, D) gather of image rows would double the features' memory
            (text_features[s : s + 65536] * image_features[text_to_image[s : s + 65536]]).sum(dim=1)
            for s in range(0, n_txt, 65536)
        ]
    )
    best = torch.full((n_img,), -float("inf"), device=device, dtype=positive.dtype)
    best = best.scatter_reduce(0, text_to_image, positive, reduce="amax")
    t2i_hi, t2i_lo, i2t_hi, i2t_lo = positive + tol, positive - tol, best + tol, best - tol
    t2i_above = torch.zeros(n_txt, dtype=torch.int32, device=device)
    t2i_least = torch.zeros(n_txt, dtype=torch.int32, device=device)
    i2t_above = torch.zeros(n_img, dtype=torch.int32, device=device)
    i2t_least = torch.zeros(n_img, dtype=torch.int32, device=device)
    scores = torch.empty(min(text_chunk, n_txt), min(image_chunk, n_img), device=device, dtype=positive.dtype)
    mask = torch.empty(scores.shape, device=device, dtype=torch.bool)
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
            thresholds = (t2i_hi[ts:te], t2i_lo[ts:te], i2t_hi[is_:ie], i2t_lo[is_:ie])
            counts = None
            if counter is not None and tile.shape == scores.shape:  # edge tiles: eager, no recompiles
                try:
                    counts = counter(tile, *thresholds)
                except Exception as e:  # noqa: BLE001 - no C++ compiler or similar: eager from now on
                    _COMPILED["fn"], _COMPILED["error"], counter = None, repr(e), None
            if counts is None:
                counts = _count(tile, *thresholds, mask[: tile.shape[0], : tile.shape[1]])
            t2i_above[ts:te] += counts[0]
            t2i_least[ts:te] += counts[1]
            i2t_above[is_:ie] += counts[2]
            i2t_least[is_:ie] += counts[3]
    return {
        "t2i_above": t2i_above.long(),
        "t2i_near": (t2i_least - t2i_above).long(),
        "i2t_above": i2t_above.long(),
        "i2t_near": (i2t_least - i2t_above).long(),
        "positive": positive,
        "best": best,
    }


def retrieval_ranks(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    text_chunk: int | None = None,
    image_chunk: int | None = None,
    progress: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimistic 0-based rank of the correct item in both directions: the number of candidates
    scoring above it, ties (and differences within float rounding) going to the query.

    ``rank < k`` is the optimistic recall@k (``*_recall_optimistic@k`` of :func:`retrieval_metrics`),
    an upper bound of CLIP_benchmark's recall@k, equal to it where no score ties with a positive.

    The (text x image) score matrix is computed tile by tile and never held whole: each tile
    updates both directions at once, so the cost is one matrix multiply plus four comparisons per
    score. Tiles default to 256 captions x 4096 images on CPU, so the scores stay in cache, and
    8192 x 65536 on GPU. With ``fused`` the comparisons are compiled by torch.compile into one pass
    (default: on CPU for problems of at least 1e10 scores, where the one-off compile time is small;
    eager if compiling fails). See ``evaluation/retrieval/bench_retrieval.py``.

    Returns:
        t2i: (N_txt,) images scoring above the caption's own image;
        i2t: (N_img,) captions scoring above the image's best-scoring caption (its other captions
            never do).
    """
    text_to_image = text_to_image.long().to(image_features.device)
    with _FullFloat32Matmul():
        tol = _tie_tolerance(image_features, text_features)
        c = _stream_counts(image_features, text_features, text_to_image, text_chunk, image_chunk, progress, fused, tol)
    return c["t2i_above"].cpu(), c["i2t_above"].cpu()


def _unique_rows(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distinct rows of ``x`` and, per row, the index of its own among them; ``(x, None)`` when
    all rows differ (the usual case: no copy).

    Rows are keyed by a random integer combination of their bytes, computed exactly in float64
    (every product and partial sum is an integer below 2**53), so equal rows get equal keys in any
    summation order: a floating-point projection would not, since a BLAS product rounds a row
    differently with its position. Rows sharing a key are checked to be equal; a collision of
    different rows (rare) falls back to ``torch.unique(dim=0)``."""
    n, width = x.shape[0], x.shape[1] * x.element_size()
    top = 2 ** (53 - 8 - max(1, (width - 1).bit_length()))  # 255 * top * width < 2**53
    gen = torch.Generator().manual_seed(0)
    weights = torch.randint(1, top, (width,), generator=gen, dtype=torch.int64).double().to(x.device)
    keys = torch.cat([x[s : s + chunk].contiguous().view(torch.uint8).double() @ weights for s in range(0, n, chunk)])
    distinct, inverse = torch.unique(keys, return_inverse=True)
    if len(distinct) == n:
        return x, None
    order = torch.arange(n, device=x.device)
    first = torch.full((len(distinct),), n, device=x.device).scatter_reduce(0, inverse, order, "amin")
    for s in range(0, n, chunk):
        if not torch.equal(x[s : s + chunk], x[first[inverse[s : s + chunk]]]):
            return torch.unique(x, dim=0, return_inverse=True)
    return x[first], inverse


def _topk_hits(
    queries: torch.Tensor,
    undecided: dict[int, torch.Tensor],
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    texts_query: bool,
    budget: int = 2**24,
) -> dict[int, torch.Tensor]:
    """Whether ``torch.topk(row, k)`` of each query's score row holds one of its positives, as
    CLIP_benchmark's ``recall_at_k`` decides it.

    ``torch.topk`` does not put the lower index first among ties: on CPU it runs, per row, a heap
    selection where 64 k <= N and an introselect otherwise, so which tied candidates make the top k
    depends on k, on N and on the whole row (not on the batch). The row is therefore rebuilt for
    these queries only and handed to ``torch.topk`` itself. Identical candidate embeddings share one
    computed score (:func:`_unique_rows`): they score bitwise identically in CLIP_benchmark's single
    matrix multiply, while products of other shapes may round them apart. Rows are built
    ``budget // N`` at a time (64 MB of float32 scores by default).

    Args:
        queries: (Q,) indices of captions (``texts_query``) or images.
        undecided: {k: (Q,) bool, the queries to settle at k}.

    Returns:
        {k: (Q,) bool hits}, meaningful where ``undecided[k]`` is True.
    """
    candidates = image_features if texts_query else text_features
    unique, inverse = _unique_rows(candidates)
    n = candidates.shape[0]
    step = max(1, budget // n)
    hits = {k: torch.zeros(len(queries), dtype=torch.bool, device=queries.device) for k in undecided}
    for s in range(0, len(queries), step):
        q = queries[s : s + step]
        # oriented as CLIP_benchmark's ``texts @ images.T``: texts on the left
        rows = text_features[q] @ unique.T if texts_query else (unique @ image_features[q].T).T
        if inverse is not None:
            rows = rows[:, inverse]
        for k, todo_at_k in undecided.items():
            todo = todo_at_k[s : s + step].nonzero().squeeze(1)
            if not len(todo):
                continue
            top = torch.topk(rows[todo], k, dim=1).indices
            if texts_query:
                hit = (top == text_to_image[q[todo]][:, None]).any(dim=1)
            else:
                hit = (text_to_image[top] == q[todo][:, None]).any(dim=1)
            hits[k][s + todo] = hit
    return hits


def _recalls(above, near, tied_positives, ks, decide) -> dict[int, torch.Tensor]:
    """Per k, each query's hit: certain where ``above >= k`` (a miss) or where fewer than
    ``k - above`` tied candidates are not positives (a hit, whatever the tie-break); ``decide``
    (queries, {k: undecided}) settles the rest with ``torch.topk``."""
    hits, undecided = {}, {}
    for k in ks:
        hits[k] = (above < k) & (above + near - tied_positives < k)
        undecided[k] = (above < k) & ~hits[k]
    todo = torch.zeros_like(above, dtype=torch.bool)
    for u in undecided.values():
        todo |= u
    if todo.any():
        queries = todo.nonzero().squeeze(1)
        settled = decide(queries, {k: u[queries] for k, u in undecided.items() if u.any()})
        for k, h in settled.items():
            hits[k][queries[undecided[k][queries]]] = h[undecided[k][queries]]
    return hits


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int | None = None,
    image_chunk: int | None = None,
    progress: bool = False,
    fused: bool | None = None,
    optimistic: bool = False,
) -> dict[str, float]:
    """Cross-modal retrieval with any number of captions per image; recall@k is CLIP_benchmark's.

    CLIP_benchmark's ``zeroshot_retrieval`` takes ``torch.topk(scores, k)`` of each query's row of
    the full score matrix; with tied scores (repeated captions give identical embeddings, hence
    identical scores) which tied candidates make the top k is up to ``torch.topk``. Here the scores
    are streamed (:func:`retrieval_ranks`); a query whose result does not depend on ties (at least
    k candidates above its positive: a miss; fewer than k above it and tied with it that are not
    positives: a hit) is decided from the counts, and for the others the row is rebuilt and
    ``torch.topk`` itself decides, on the features' device, as CLIP_benchmark does on its
    ``device`` (the CPU and CUDA kernels break ties differently). Memory stays O(tile) plus the
    rebuilt rows, a bounded batch at a time. Scores within float rounding of each other (16 units,
    see ``_tie_tolerance``) count as tied when deciding which queries to settle with ``torch.topk``.

    Args:
        image_features: (N_img, D), L2-normalised.
        text_features: (N_txt, D), L2-normalised.
        text_to_image: (N_txt,) index of each caption's image.
        chunk_size, image_chunk, fused: captions and images per score tile, and whether to fuse
            the comparisons with torch.compile (see :func:`retrieval_ranks`).
        optimistic: also report the figures with ties resolved in the query's favour (mmcl's
            recall@k before it matched CLIP_benchmark's on tied scores).

    Returns:
        image_retrieval_recall@k: mean over captions of [its image is in the top k images];
        text_retrieval_recall@k: mean over images of [any of its captions is in the top k captions];
        image/text_retrieval_mean_rank and _median_rank: the 1-based rank of the first correct item,
            ties broken at random (its expectation: above + (tied + 1) / (tied positives + 1));
        with ``optimistic``, image/text_retrieval_recall_optimistic@k and
            image/text_retrieval_mean_rank_optimistic / _median_rank_optimistic: the correct item
            ahead of every candidate tied with it (an upper bound of recall@k).
    """
    device = image_features.device
    text_to_image = text_to_image.long().to(device)
    n_img = image_features.shape[0]
    with _FullFloat32Matmul():
        tol = _tie_tolerance(image_features, text_features)
        c = _stream_counts(image_features, text_features, text_to_image, chunk_size, image_chunk, progress, fused, tol)
        # An image's captions that surely sit in its tie band (half the margin: the tiles' rounding
        # is well inside it); a tied positive among the top k is a hit, whichever tie wins.
        sure = (c["positive"] >= c["best"][text_to_image] - tol / 2).long()
        i2t_tied_pos = torch.zeros(n_img, dtype=torch.long, device=device).scatter_add_(0, text_to_image, sure)
        t2i_tied_pos = torch.ones_like(c["t2i_above"])

        def decide(texts_query):
            return lambda queries, undecided: _topk_hits(
                queries, undecided, image_features, text_features, text_to_image, texts_query
            )

        t2i_hits = _recalls(c["t2i_above"], c["t2i_near"], t2i_tied_pos, ks, decide(True))
        i2t_hits = _recalls(c["i2t_above"], c["i2t_near"], i2t_tied_pos, ks, decide(False))
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = t2i_hits[k].float().mean().item()
        out[f"text_retrieval_recall@{k}"] = i2t_hits[k].float().mean().item()
    for name, above, near, tied_pos in (
        ("image_retrieval", c["t2i_above"], c["t2i_near"], t2i_tied_pos),
        ("text_retrieval", c["i2t_above"], c["i2t_near"], i2t_tied_pos),
    ):
        expected = above.double() + (near.double() + 1) / (tied_pos.clamp(max=near).double() + 1)
        out[f"{name}_mean_rank"] = expected.mean().item()
        out[f"{name}_median_rank"] = expected.median().item()
    if optimistic:
        for k in ks:
            out[f"image_retrieval_recall_optimistic@{k}"] = (c["t2i_above"] < k).float().mean().item()
            out[f"text_retrieval_recall_optimistic@{k}"] = (c["i2t_above"] < k).float().mean().item()
        for name, above in (("image_retrieval", c["t2i_above"]), ("text_retrieval", c["i2t_above"])):
            out[f"{name}_mean_rank_optimistic"] = (above + 1).float().mean().item()
            out[f"{name}_median_rank_optimistic"] = (above + 1).float().median().item()
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


def group_recall_at_k(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_groups: list[str],
    text_groups: list[str],
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k where a hit is a retrieved item of the query's group (an equal group key: the
    class of captions built from labels, the attributes a caption names), not only its own pair.

    Returns:
        image_retrieval_group_recall@k: mean over captions of [one of its top k images is of its group];
        text_retrieval_group_recall@k: mean over images of [one of its top k captions is of its group].
        The top k is ``torch.topk``'s, as in :func:`retrieval_metrics`; a k above the number of
        candidates takes them all.
    """
    ids: dict[str, int] = {}
    img = torch.tensor([ids.setdefault(g, len(ids)) for g in image_groups], device=image_features.device)
    txt = torch.tensor([ids.setdefault(g, len(ids)) for g in text_groups], device=image_features.device)

    def hits(queries, candidates, query_groups, candidate_groups) -> dict[int, torch.Tensor]:
        top = min(max(ks), candidates.shape[0])
        found = []
        for s in range(0, queries.shape[0], chunk_size):
            idx = (queries[s : s + chunk_size] @ candidates.T).topk(top, dim=1).indices
            same = candidate_groups[idx] == query_groups[s : s + chunk_size, None]
            found.append(same.cumsum(1) > 0)  # [a hit within the first j + 1]
        found = torch.cat(found)
        return {k: int(found[:, min(k, top) - 1].sum()) / found.shape[0] for k in ks}

    with _FullFloat32Matmul():
        t2i = hits(text_features, image_features, txt, img)
        i2t = hits(image_features, text_features, img, txt)
    out = {f"image_retrieval_group_recall@{k}": t2i[k] for k in ks}
    out.update({f"text_retrieval_group_recall@{k}": i2t[k] for k in ks})
    return out


def duplicate_fraction(keys: list[str]) -> float:
    """Fraction of items whose key occurs more than once."""
    from collections import Counter

    counts = Counter(keys)
    return sum(1 for k in keys if counts[k] > 1) / max(1, len(keys))
