"""What people look at first in a CLIP report: which images a caption retrieves (and which captions
an image retrieves), and which classes zero-shot classification confuses.

- :func:`build_gallery`: for a fixed, seeded sample of captions, the top-k images each retrieves,
  with the true image marked; and for a sample of images, the top-k captions. The thumbnails are
  read again from the dataset in the encoder's order (the items the encoder kept).
- :func:`build_confusion`: the zero-shot classifier of the dataset's class names x templates (the
  evaluation's own, :mod:`mmcl.eval.zero_shot`) applied to the encoded labelled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THUMB = 128  # thumbnail side, pixels


@dataclass
class Gallery:
    """Retrieval examples: ``text_to_image[i] = (caption, true image index, [(image index, score)])``
    and ``image_to_text[i] = (image index, [(caption index, score)])``; ``thumbnails`` maps image
    index -> RGB array; ``true_rank`` the 1-based rank of the true item for each query."""

    dataset: str
    captions: list[str]
    text_to_image: list[tuple[str, int, list[tuple[int, float]]]]
    image_to_text: list[tuple[int, list[tuple[int, float]]]]
    caption_image: list[int]  # the image of each caption (text_to_image of the encoded set)
    thumbnails: dict[int, np.ndarray]
    true_rank_t2i: list[int]
    true_rank_i2t: list[int]
    seed: int


@dataclass
class Confusion:
    """Zero-shot predictions on labelled images: ``counts[t, p]`` images of class t predicted p."""

    dataset: str
    classnames: list[str]
    counts: np.ndarray  # (C, C) int
    num_images: int
    acc1: float


def _sample(n: int, size: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=min(size, n), replace=False).tolist())


def _thumbnails(data, wanted: set[int], texts: bool = True) -> dict[int, np.ndarray]:
    """RGB thumbnails of the encoded images ``wanted`` (indices among the items the encoder kept:
    readable ones, with a caption when it read captions), read in the encoder's order."""
    import torch

    source = data.source
    saved, source.transform = source.transform, None
    out: dict[int, np.ndarray] = {}
    kept = 0
    try:
        loader = torch.utils.data.DataLoader(source, batch_size=1, collate_fn=lambda items: items)
        for (item,) in loader:
            if isinstance(item, tuple) or (texts and not item["captions"]):
                continue  # what the encoder skips
            if kept in wanted:
                image = item["image"].convert("RGB")
                image.thumbnail((THUMB, THUMB))
                out[kept] = np.asarray(image)
            kept += 1
            if len(out) == len(wanted):
                break
    finally:
        source.transform = saved
    return out


def _ranked(queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ candidates.T
    order = np.argsort(-scores, axis=1, kind="stable")
    return order, np.take_along_axis(scores, order, axis=1)


def build_gallery(enc, data, queries: int = 6, k: int = 5, seed: int = 0) -> Gallery:
    """Retrieval examples of an encoded dataset (:class:`~mmcl.eval.encode.Encoded` with captions;
    ``data`` the :class:`~mmcl.data.evalsets.EvalDataset` it was encoded from)."""
    img, txt = enc.image_features.numpy(), enc.text_features.numpy()
    t2i = enc.text_to_image.numpy()
    k = min(k, img.shape[0])
    t2i_rows, i2t_rows, ranks_t2i, ranks_i2t = [], [], [], []
    for c in _sample(txt.shape[0], queries, seed):
        order, scores = _ranked(txt[c : c + 1], img)
        ranks_t2i.append(int(np.nonzero(order[0] == t2i[c])[0][0]) + 1)
        top = [(int(i), float(s)) for i, s in zip(order[0, :k], scores[0, :k])]
        t2i_rows.append((enc.captions[c], int(t2i[c]), top))
    for i in _sample(img.shape[0], queries, seed + 1):
        order, scores = _ranked(img[i : i + 1], txt)
        own = np.nonzero(t2i[order[0]] == i)[0]
        ranks_i2t.append(int(own[0]) + 1 if own.size else 0)
        i2t_rows.append((i, [(int(c), float(s)) for c, s in zip(order[0, :k], scores[0, :k])]))
    wanted = {i for _, true, top in t2i_rows for i in [true, *(j for j, _ in top)]} | {i for i, _ in i2t_rows}
    return Gallery(
        dataset=data.name,
        captions=list(enc.captions),
        text_to_image=t2i_rows,
        image_to_text=i2t_rows,
        caption_image=t2i.tolist(),
        thumbnails=_thumbnails(data, wanted),
        true_rank_t2i=ranks_t2i,
        true_rank_i2t=ranks_i2t,
        seed=seed,
    )


def build_confusion(adapter, enc, data, ds_cfg, batch_size: int = 64) -> Confusion | None:
    """Zero-shot confusion counts on the labelled encoded images; None when there are none."""
    import torch

    from ..eval.zero_shot import class_prompts, zero_shot_classifier

    keep = enc.labels >= 0
    if int(keep.sum()) == 0:
        return None
    names, prompts = class_prompts(data, ds_cfg.classnames, ds_cfg.templates)
    labels = enc.labels[keep]
    if int(labels.max()) >= len(names):
        return None
    classifier = zero_shot_classifier(adapter, names, prompts, batch_size).cpu()
    predicted = (enc.image_features[keep] @ classifier).argmax(dim=1)
    counts = torch.zeros(len(names), len(names), dtype=torch.long)
    counts.index_put_((labels.long(), predicted.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    return Confusion(
        dataset=data.name,
        classnames=list(names),
        counts=counts.numpy(),
        num_images=int(keep.sum()),
        acc1=float((predicted == labels).float().mean()),
    )


def confused_classes(counts: np.ndarray, limit: int = 20) -> list[int]:
    """The classes a confusion matrix shows: those with an image or a prediction, and of more than
    ``limit`` of them, the ``limit`` involved in the most confusions (row + column, off the
    diagonal), in class order."""
    present = np.nonzero(counts.sum(0) + counts.sum(1))[0]
    if len(present) <= limit:
        return present.tolist()
    off = counts - np.diag(np.diag(counts))
    involvement = off.sum(0) + off.sum(1)
    chosen = sorted(present, key=lambda c: (-involvement[c], -counts[c].sum(), c))[:limit]
    return sorted(int(c) for c in chosen)
