"""Embeddings of a run's evaluation data: recall@k curves, a 2-D map, a retrieval gallery and a
zero-shot confusion matrix (:mod:`mmcl.report.gallery`).

The model is rebuilt from the run's checkpoint (:meth:`mmcl.eval.MmclAdapter.from_run`) and the
first ``max_images`` images of each dataset in the recipe's ``eval.datasets`` are encoded with
their captions. Everything here is skipped, with a note saying why, when the run folder has no
recipe, no checkpoint or no readable evaluation data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError


@dataclass
class EvalEmbeddings:
    """Encoded evaluation items of one dataset."""

    dataset: str
    image_features: np.ndarray  # (N_img, D), L2-normalised
    labels: np.ndarray  # (N_img,), -1 where unknown
    classnames: list[str] | None
    # recall@k for k = 1..len(list): "text_to_image" (caption finds its image; CLIP_benchmark's
    # image_retrieval_recall@k) and "image_to_text" (image finds one of its captions)
    recall: dict[str, list[float]]
    num_texts: int
    checkpoint: str  # the checkpoint folder's name
    gallery: Any = None  # a report.gallery.Gallery (the first dataset), or None
    confusion: Any = None  # a report.gallery.Confusion (the first zero-shot dataset with labels), or None

    @property
    def num_images(self) -> int:
        return self.image_features.shape[0]


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the first two principal components.

    Args:
        features: (N, D).

    Returns:
        coords: (N, 2); each axis's sign is fixed so its largest loading is positive, so the same
            features always give the same picture.
        explained: (2,) fraction of the total variance along each axis.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    coords = np.zeros((x.shape[0], 2))
    explained = np.zeros(2)
    if x.shape[0] < 2:
        return coords, explained
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1
    coords[:, : comps.shape[0]] = x @ (comps * signs[:, None]).T
    total = float((s**2).sum())
    if total > 0:
        explained[: comps.shape[0]] = s[:2] ** 2 / total
    return coords, explained


def cluster_labels(features: np.ndarray, k: int | None = None, seed: int = 0) -> np.ndarray:
    """Seeded k-means cluster of each row, for colouring a map of unlabelled data.

    ``k`` defaults to about sqrt(N / 2), between 2 and 10.
    """
    from sklearn.cluster import KMeans

    n = features.shape[0]
    distinct = np.unique(np.round(features, 6), axis=0).shape[0]
    k = k or int(np.clip(round((n / 2) ** 0.5), 2, 10))
    k = min(k, distinct)
    if k < 2:
        return np.zeros(n, dtype=int)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(np.asarray(features, dtype=np.float64))


def _classnames(ds_cfg, data) -> list[str] | None:
    from ..eval.zero_shot import read_lines

    if ds_cfg.classnames and Path(ds_cfg.classnames).is_file():
        return read_lines(ds_cfg.classnames)
    return data.classnames


def encode_eval_sets(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    max_images: int = 500,
    max_k: int = 10,
    device: str | None = None,
    batch_size: int = 64,
) -> tuple[list[EvalEmbeddings], list[str]]:
    """Encode the run's evaluation datasets with its checkpoint.

    Returns:
        one :class:`EvalEmbeddings` per readable dataset, and notes on what was skipped and why.
    """
    import torch

    from ..data.evalsets import open_dataset
    from ..eval.adapters import MmclAdapter
    from ..eval.encode import encode_dataset
    from ..eval.metrics import retrieval_metrics
    from ..models.run_folder import load_run_recipe
    from ..train.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        return [], ["no recipe.yaml in the run folder: recall@k curve and embedding map skipped"]
    recipe = load_run_recipe(run_dir)
    datasets = [d for d in recipe.eval.datasets if d.path and set(d.tasks) != {"compositional"}]
    if not datasets:
        return [], ["the recipe declares no eval.datasets with images: recall@k curve and embedding map skipped"]
    if checkpoint is None and latest_checkpoint(run_dir) is None:
        return [], ["no checkpoint in the run folder: recall@k curve and embedding map skipped"]
    if device is None and recipe.train.cpu:
        device = "cpu"
    adapter = MmclAdapter.from_run(run_dir, checkpoint, torch.device(device) if device else None)
    out, notes = [], []
    for ds in datasets:
        try:
            data = open_dataset(
                ds.path,
                image_key=ds.image_key,
                caption_key=ds.caption_key,
                # the config's default name is only a guess; open_dataset looks for it itself
                label_key=None if ds.label_key == "label" else ds.label_key,
                separator=ds.separator,
                max_items=max_images,
                name=ds.name,
            )
            enc = encode_dataset(adapter, data, batch_size, texts=True, progress=False)
        except (ConfigError, OSError) as e:
            notes.append(f"eval dataset {ds.name!r} ({ds.path}) skipped: {e}")
            continue
        n_img = enc.image_features.shape[0]
        ks = tuple(range(1, min(max_k, n_img) + 1))
        metrics = retrieval_metrics(enc.image_features, enc.text_features, enc.text_to_image, ks)
        recall = {
            "text_to_image": [metrics[f"image_retrieval_recall@{k}"] for k in ks],
            "image_to_text": [metrics[f"text_retrieval_recall@{k}"] for k in ks],
        }
        if enc.skipped:
            notes.append(
                f"eval dataset {ds.name!r}: skipped items "
                + ", ".join(f"{k}={v}" for k, v in sorted(enc.skipped.items()))
            )
        extras = _extras(
            adapter,
            enc,
            data,
            ds,
            gallery=not out,  # the first dataset read
            confusion="zeroshot" in ds.tasks and not any(e.confusion is not None for e in out),
            notes=notes,
        )
        out.append(
            EvalEmbeddings(
                dataset=ds.name,
                image_features=enc.image_features.numpy(),
                labels=enc.labels.numpy(),
                classnames=_classnames(ds, data),
                recall=recall,
                num_texts=enc.text_features.shape[0],
                checkpoint=adapter.checkpoint.name,
                **extras,
            )
        )
    if not out and not notes:
        notes.append("no evaluation data could be read: recall@k curve and embedding map skipped")
    elif out and not any(e.confusion is not None for e in out):
        notes.append(
            "no zero-shot confusion matrix: no eval.datasets entry runs zeroshot on labelled images with class names"
        )
    return out, notes


def _extras(adapter, enc, data, ds, gallery: bool, confusion: bool, notes: list[str]) -> dict:
    """The retrieval gallery and zero-shot confusion counts of one encoded dataset, as asked."""
    from .gallery import build_confusion, build_gallery

    out = {}
    if gallery:
        try:
            out["gallery"] = build_gallery(enc, data)
        except (ConfigError, OSError) as e:
            notes.append(f"eval dataset {ds.name!r}: retrieval gallery skipped: {e}")
    if confusion:
        try:
            out["confusion"] = build_confusion(adapter, enc, data, ds)
        except (ConfigError, OSError) as e:
            notes.append(f"eval dataset {ds.name!r}: zero-shot confusion matrix skipped: {e}")
    return out
