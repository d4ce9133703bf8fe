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


def class_prompts(data, classnames=None, templates=None, language: str = "en") -> tuple[list[str], list[str]]:
    """Class names and prompt templates for ``data``: the given ones (lists, files or shipped
    benchmark names such as ``imagenet1k`` or ``cifar10``), else the dataset's own
    (``classnames.txt``, folder names, ``ClassLabel`` names, a benchmark's shipped lists, ...);
    templates fall back to ImageNet's 80 CLIP prompts, as in CLIP_benchmark. ``language`` picks
    the shipped translations (:func:`mmcl.eval.classnames.resolve_prompts`)."""
    from .classnames import resolve_prompts

    return resolve_prompts(data, classnames, templates, language)


def zeroshot_from_features(adapter, enc, names: list[str], prompts: list[str], batch_size: int, name: str) -> dict:
    """Zero-shot metrics of encoded images (:class:`~mmcl.eval.encode.Encoded`) with the classifier
    of ``names`` x ``prompts``: acc1, acc5, mean_per_class_recall, num_items, num_classes,
    num_templates (and ``skipped``)."""
    from ..errors import ConfigError

    if int(enc.labels.max()) >= len(names):
        raise ConfigError(f"{name}: label {int(enc.labels.max())} but only {len(names)} class names")
    classifier = zero_shot_classifier(adapter, names, prompts, batch_size).to(enc.image_features.device)
    metrics = zero_shot_metrics(enc.image_features, enc.labels, classifier)
    metrics["num_classes"], metrics["num_templates"] = len(names), len(prompts)
    if enc.skipped:
        metrics["skipped"] = enc.skipped
    return metrics


def evaluate_zeroshot(
    adapter,
    data,
    classnames: str | list[str] | None = None,
    templates: str | list[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """Zero-shot classification of ``data`` (an :class:`~mmcl.data.evalsets.EvalDataset`); class
    names and templates as :func:`class_prompts` finds them."""
    from .encode import encode_dataset

    names, prompts = class_prompts(data, classnames, templates)
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=False, progress=progress)
    return zeroshot_from_features(adapter, enc, names, prompts, batch_size, data.name)
