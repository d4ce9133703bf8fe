"""Run the evaluators a recipe declares on a model adapter; write JSON and markdown results."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.csv_jsonl import PairedImageTextDataset
from ..data.evalsets import open_dataset
from ..errors import ConfigError
from ..recipe import EvalConfig, EvalDatasetConfig
from .compositional import evaluate_compositional
from .dense_probe import dense_features, dense_probe, load_segmentation
from .finetune import finetune_transfer
from .knn import knn_metrics
from .linear_probe import linear_probe
from .metrics import attribute_recall_at_1, duplicate_fraction, retrieval_metrics
from .probes import _labelled_features
from .retrieval import same_caption_same_embedding
from .zero_shot import read_lines, zero_shot_classifier, zero_shot_metrics

# tasks that read images only (no text tower needed)
IMAGE_TASKS = ("knn", "linear_probe", "image_retrieval", "dense_probe", "finetune")


def _encode_dataset(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool):
    needs_labels = bool({"zeroshot", "knn", "linear_probe"} & set(ds_cfg.tasks))
    dataset = PairedImageTextDataset(
        ds_cfg.path,
        transform=adapter.preprocess,
        image_key=ds_cfg.image_key,
        caption_key=ds_cfg.caption_key,
        separator=ds_cfg.separator,
        label_key=ds_cfg.label_key if needs_labels else None,
        max_items=ds_cfg.max_items,
    )
    # Rows that share an image path are several captions of one image; the image is encoded once.
    first_row_of_path: dict[str, int] = {}
    for row, path in enumerate(dataset.images):
        first_row_of_path.setdefault(path, row)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, list(first_row_of_path.values())),
        batch_size=batch_size,
        collate_fn=lambda items: items,
    )
    feats, kept_rows, skipped = [], [], Counter()
    for items in tqdm(loader, desc=f"{ds_cfg.name}: images", disable=not progress, leave=False):
        good = [it for it in items if isinstance(it, dict)]
        skipped.update(it[1] for it in items if isinstance(it, tuple))
        if good:
            feats.append(adapter.encode_image(torch.stack([it["image"] for it in good])))
            kept_rows.extend(it["index"] for it in good)
    image_features = torch.cat(feats)
    position = {dataset.images[row]: n for n, row in enumerate(kept_rows)}  # path -> row of image_features

    text_rows = [i for i, p in enumerate(dataset.images) if p in position and dataset.captions[i].strip()]
    texts = [dataset.captions[i] for i in text_rows]
    chunks = range(0, len(texts), batch_size)
    text_features = torch.cat(
        [
            adapter.encode_text(texts[i : i + batch_size])
            for i in tqdm(chunks, desc=f"{ds_cfg.name}: texts", disable=not progress, leave=False)
        ]
    )
    # repeated captions tie exactly, as CLIP_benchmark's topk then orders them (see retrieval.py)
    text_features = same_caption_same_embedding(text_features, texts)
    text_to_image = torch.tensor([position[dataset.images[i]] for i in text_rows])
    labels = torch.tensor([dataset.labels[r] for r in kept_rows]) if dataset.labels is not None else None
    keys = None
    if ds_cfg.group_key is not None:
        column = [str(r[ds_cfg.group_key]) for r in dataset.rows]
        keys = ([column[r] for r in kept_rows], [column[i] for i in text_rows])
    return image_features, text_features, text_to_image, labels, keys, dict(skipped)


def _open_split(ds_cfg: EvalDatasetConfig, train: bool):
    """``train_path`` (``train``: the probes' training set) or the dataset itself, as an EvalDataset."""
    return open_dataset(
        ds_cfg.train_path if train else ds_cfg.path,
        image_key=ds_cfg.image_key,
        label_key=ds_cfg.label_key,
        separator=ds_cfg.separator,
        max_items=ds_cfg.train_max_items if train else ds_cfg.max_items,
        name=f"{ds_cfg.name}/train" if train else ds_cfg.name,
    )


def _labelled(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool, train: bool):
    """Labelled image features of ``train_path`` (``train``: the kNN / linear-probe training set) or of
    the dataset itself (image-only evaluation: no captions read)."""
    return _labelled_features(adapter, _open_split(ds_cfg, train), batch_size, 0, progress)


def _train_features(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool):
    features, labels, _ = _labelled(adapter, ds_cfg, batch_size, progress, train=True)
    return features, labels


def _probe(adapter, ds_cfg: EvalDatasetConfig, task: str, train, img, labels) -> dict:
    """kNN or linear probe: fit on the training features, score this dataset's labelled images."""
    x_tr, y_tr = train
    keep = labels >= 0
    if task == "knn":
        return knn_metrics(x_tr, y_tr, img[keep], labels[keep], k=ds_cfg.knn_k, temperature=ds_cfg.knn_temperature)
    return linear_probe(x_tr, y_tr, img[keep], labels[keep], device=adapter.device)


def paired_image_retrieval(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool = False) -> dict:
    """Image <-> image retrieval between the ``image_key`` and ``image2_key`` columns (row i's two
    images match). ``forward_recall@k``: an image finds its paired image2 among all image2s;
    ``backward_recall@k``: the other way. ``chance_recall@1`` = 1 / number of pairs."""
    dataset = PairedImageTextDataset(
        ds_cfg.path,
        transform=adapter.preprocess,
        image_key=ds_cfg.image_key,
        image2_key=ds_cfg.image2_key,
        separator=ds_cfg.separator,
        max_items=ds_cfg.max_items,
        need_caption=False,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=lambda items: items)
    first, second, skipped = [], [], Counter()
    for items in tqdm(loader, desc=f"{ds_cfg.name}: image pairs", disable=not progress, leave=False):
        good = [it for it in items if isinstance(it, dict)]
        skipped.update(it[1] for it in items if isinstance(it, tuple))
        if good:
            first.append(adapter.encode_paired(torch.stack([it["image"] for it in good]), second=False))
            second.append(adapter.encode_paired(torch.stack([it["image2"] for it in good]), second=True))
    a, b = torch.cat(first), torch.cat(second)
    # retrieval_metrics(x, y, ...): "text_retrieval" ranks y for each x, "image_retrieval" x for each y
    raw = retrieval_metrics(a, b, torch.arange(a.shape[0]))
    metrics = {
        name.replace("text_retrieval", "forward").replace("image_retrieval", "backward"): v for name, v in raw.items()
    }
    metrics.update(num_pairs=a.shape[0], chance_recall_at_1=1.0 / a.shape[0])
    if skipped:
        metrics["skipped"] = dict(skipped)
    return metrics


def segmentation_splits(adapter, ds_cfg: EvalDatasetConfig, batch_size: int) -> dict[str, tuple]:
    """``{"train": (maps, masks, skipped), "test": ...}``: the vision tower's frozen feature maps
    (N, C, h, w) of ``train_path`` and ``path``, their masks (N, H, W) and skip counts. Images and
    masks are resized to ``dense_probe_size``, by default the tower's input size."""
    tower = adapter.vision_tower()
    data_cfg = tower.data_config()
    native, mean, std = data_cfg["input_size"][-1], data_cfg["mean"], data_cfg["std"]
    size = ds_cfg.dense_probe_size or native
    splits = {}
    for name, path, limit in (
        ("train", ds_cfg.train_path, ds_cfg.train_max_items),
        ("test", ds_cfg.path, ds_cfg.max_items),
    ):
        images, masks, skipped = load_segmentation(
            path, ds_cfg.image_key, ds_cfg.mask_key, size, mean, std, ds_cfg.separator, limit
        )
        try:
            feats = dense_features(lambda x: tower.dense_features(x.to(adapter.device)), images, batch_size)
        except (AssertionError, RuntimeError) as e:  # e.g. a ViT's fixed position embeddings
            if size == native:
                raise
            raise ConfigError(
                f"{ds_cfg.name}: dense_probe_size={size}: the vision tower does not take {size}px inputs ({e}); "
                f"valid: null (its input size, {native}) or a size it accepts (convolutional towers take any)"
            ) from None
        splits[name] = (feats, masks, skipped)
    return splits


def segmentation_probe(adapter, ds_cfg: EvalDatasetConfig, batch_size: int) -> dict:
    """Per-pixel linear probe on the vision tower's feature map (:mod:`mmcl.eval.dense_probe`):
    trained on ``train_path``'s masks, scored on this dataset's (:func:`segmentation_splits`)."""
    splits = segmentation_splits(adapter, ds_cfg, batch_size)
    metrics = dense_probe(
        *splits["train"][:2], *splits["test"][:2], epochs=ds_cfg.dense_probe_epochs, device=adapter.device
    )
    skipped = {name: split[2] for name, split in splits.items() if split[2]}
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def _labelled_images(adapter, ds_cfg: EvalDatasetConfig, train: bool):
    """Preprocessed labelled images (N, 3, H, W), labels and skip counts of ``train_path`` or ``path``."""
    data = _open_split(ds_cfg, train)
    data.source.transform = adapter.preprocess
    images, labels, skipped = [], [], Counter()
    for item in data.source:
        if isinstance(item, tuple):
            skipped[item[1]] += 1
        elif int(item["label"]) >= 0:
            images.append(item["image"])
            labels.append(int(item["label"]))
    if not images:
        raise ConfigError(f"{ds_cfg.name}: no labelled images in {ds_cfg.train_path if train else ds_cfg.path}")
    return torch.stack(images), torch.tensor(labels), dict(skipped)


def finetune_task(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool = False) -> dict:
    """Fine-tune the whole vision tower on fractions of ``train_path`` against the same architecture
    from random init (:mod:`mmcl.eval.finetune`), scored on this dataset."""
    x_tr, y_tr, s_tr = _labelled_images(adapter, ds_cfg, train=True)
    x_te, y_te, s_te = _labelled_images(adapter, ds_cfg, train=False)
    tower = adapter.vision_tower()
    metrics = finetune_transfer(
        tower,
        lambda: adapter.vision_tower(pretrained=False),
        tower.num_features,
        x_tr,
        y_tr,
        x_te,
        y_te,
        fractions=tuple(ds_cfg.finetune_fractions),
        epochs=ds_cfg.finetune_epochs,
        lr=ds_cfg.finetune_lr,
        device=adapter.device,
        progress=progress,
    )
    skipped = {name: s for name, s in (("train", s_tr), ("test", s_te)) if s}
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def _own_data_task(adapter, ds_cfg: EvalDatasetConfig, task: str, batch_size: int, progress: bool):
    """The metrics of a task that reads its own data (image pairs, masks, labelled images for
    fine-tuning), or None for a task that scores shared features."""
    if task == "image_retrieval":
        return paired_image_retrieval(adapter, ds_cfg, batch_size, progress)
    if task == "dense_probe":
        return segmentation_probe(adapter, ds_cfg, batch_size)
    if task == "finetune":
        return finetune_task(adapter, ds_cfg, batch_size, progress)
    return None


def _evaluate_images(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool) -> list[dict]:
    """Image-only tasks (kNN, linear probe, image <-> image retrieval, dense probe, fine-tuning): no
    caption is read."""
    records, test, train = [], None, None
    for task in ds_cfg.tasks:
        metrics = _own_data_task(adapter, ds_cfg, task, batch_size, progress)
        if metrics is None:  # knn / linear_probe on the dataset's labelled image features
            test = test or _labelled(adapter, ds_cfg, batch_size, progress, train=False)
            train = train or _train_features(adapter, ds_cfg, batch_size, progress)
            metrics = _probe(adapter, ds_cfg, task, train, test[0], test[1])
            if test[2]:
                metrics["skipped"] = test[2]
        records.append({"dataset": ds_cfg.name, "task": task, "metrics": metrics})
    return records


def evaluate(adapter, cfg: EvalConfig, progress: bool = True) -> list[dict]:
    """Evaluate on every dataset in ``cfg``; one record per (dataset, task), CLIP_benchmark-shaped."""
    records = []
    for ds_cfg in cfg.datasets:
        if set(ds_cfg.tasks) <= set(IMAGE_TASKS):
            records += _evaluate_images(adapter, ds_cfg, cfg.batch_size, progress)
            continue
        img, txt, t2i, labels, keys, skipped = _encode_dataset(adapter, ds_cfg, cfg.batch_size, progress)
        train = None  # encoded once, shared by knn and linear_probe
        for task in ds_cfg.tasks:
            own = _own_data_task(adapter, ds_cfg, task, cfg.batch_size, progress)
            if own is not None:
                metrics = own
            elif task == "zeroshot":
                classifier = zero_shot_classifier(
                    adapter, read_lines(ds_cfg.classnames), read_lines(ds_cfg.templates), cfg.batch_size
                )
                metrics = zero_shot_metrics(img, labels, classifier)
            elif task in ("knn", "linear_probe"):
                train = train or _train_features(adapter, ds_cfg, cfg.batch_size, progress)
                metrics = _probe(adapter, ds_cfg, task, train, img, labels)
            elif task == "compositional":
                metrics = evaluate_compositional(
                    adapter, ds_cfg.compositional, batch_size=cfg.batch_size, progress=progress
                )
            else:
                metrics = retrieval_metrics(img, txt, t2i)
                metrics["num_images"], metrics["num_texts"] = img.shape[0], txt.shape[0]
                if keys is not None:
                    metrics.update(attribute_recall_at_1(img, txt, *keys))
                    metrics["duplicate_caption_fraction"] = duplicate_fraction(keys[1])
            if skipped:
                metrics["skipped"] = skipped
            records.append({"dataset": ds_cfg.name, "task": task, "metrics": metrics})
    return records


HEADLINE = {
    "zeroshot": ["acc1", "acc5", "mean_per_class_recall"],
    "knn": ["acc1", "mean_per_class_recall"],
    "linear_probe": ["acc1", "mean_per_class_recall"],
    "compositional": ["acc"],
    "image_retrieval": ["forward_recall@1", "backward_recall@1", "forward_recall@5", "chance_recall_at_1"],
    "dense_probe": ["pixel_acc", "mean_iou", "foreground_iou"],
    "retrieval": [
        "image_retrieval_recall@1",
        "text_retrieval_recall@1",
        "image_retrieval_recall@5",
        "text_retrieval_recall@5",
        "image_retrieval_attribute_recall@1",
        "text_retrieval_attribute_recall@1",
        "duplicate_caption_fraction",
    ],
}


def markdown_table(records: list[dict]) -> str:
    lines = ["| dataset | task | metric | value |", "|---|---|---|---|"]
    for r in records:
        names = HEADLINE.get(r["task"], [])
        if r["task"] == "finetune":  # one pair per labelled fraction, e.g. "1%/pretrained_acc1"
            names = [k for k in r["metrics"] if k.endswith(("/pretrained_acc1", "/scratch_acc1"))]
        for name in names:
            if name in r["metrics"]:
                v = r["metrics"][name]
                lines.append(
                    f"| {r['dataset']} | {r['task']} | {name} | "
                    f"{'nan' if isinstance(v, float) and math.isnan(v) else f'{100 * v:.2f}%'} |"
                )
    return "\n".join(lines) + "\n"


def write_results(records: list[dict], out_dir: str | Path, step: int, model_name: str) -> tuple[Path, Path]:
    """``eval/step-N.json`` (+ ``results.json``/``results.md`` for the newest) in ``out_dir``."""
    out = Path(out_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    full = [{**r, "model": model_name, "pretrained": f"step-{step}", "step": step} for r in records]
    text = json.dumps(full, indent=2)
    (out / f"step-{step:07d}.json").write_text(text)
    json_path, md_path = Path(out_dir) / "results.json", Path(out_dir) / "results.md"
    json_path.write_text(text)
    md_path.write_text(f"# Evaluation of {model_name} at step {step}\n\n" + markdown_table(records))
    return json_path, md_path
