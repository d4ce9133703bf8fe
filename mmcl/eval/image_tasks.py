"""The image-only evaluations that read their own data: image <-> paired image retrieval, the
per-pixel (dense) probe and fine-tuning transfer (registered as tasks in :mod:`mmcl.eval.tasks.images`)."""

from __future__ import annotations

from collections import Counter

import torch
from tqdm.auto import tqdm

from ..data.csv_jsonl import PairedImageTextDataset
from ..errors import ConfigError
from ..recipe import EvalDatasetConfig
from .dense_probe import dense_features, dense_probe, load_segmentation
from .finetune import finetune_transfer
from .metrics import retrieval_metrics


def _separator(ds_cfg: EvalDatasetConfig, path: str) -> str:
    return ds_cfg.separator or ("\t" if str(path).endswith(".tsv") else ",")


def paired_image_retrieval(adapter, ds_cfg: EvalDatasetConfig, batch_size: int, progress: bool = False) -> dict:
    """Image <-> image retrieval between the ``image_key`` and ``image2_key`` columns (row i's two
    images match). ``forward_recall@k``: an image finds its paired image2 among all image2s;
    ``backward_recall@k``: the other way. ``chance_recall_at_1`` = 1 / number of pairs."""
    dataset = PairedImageTextDataset(
        ds_cfg.path,
        transform=adapter.preprocess,
        image_key=ds_cfg.image_key or "filepath",
        image2_key=ds_cfg.image2_key,
        separator=_separator(ds_cfg, ds_cfg.path),
        image_root=ds_cfg.image_root,
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
    raw = retrieval_metrics(a, b, torch.arange(a.shape[0]), tuple(ds_cfg.recall_k))
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
            path, ds_cfg.image_key or "filepath", ds_cfg.mask_key, size, mean, std, _separator(ds_cfg, path), limit
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


def _labelled_images(adapter, data, which: str):
    """Preprocessed labelled images (N, 3, H, W), labels and skip counts of the ``which`` set of an
    :class:`~mmcl.eval.context.EvalData`."""
    dataset = data.open(which)
    dataset.source.transform = adapter.preprocess
    images, labels, skipped = [], [], Counter()
    for item in dataset.source:
        if isinstance(item, tuple):
            skipped[item[1]] += 1
        elif int(item["label"]) >= 0:
            images.append(item["image"])
            labels.append(int(item["label"]))
    if not images:
        raise ConfigError(f"{data.cfg.name}: no labelled images in {data.path_of(which)}")
    return torch.stack(images), torch.tensor(labels), dict(skipped)


def finetune_task(adapter, data, ds_cfg: EvalDatasetConfig, progress: bool = False) -> dict:
    """Fine-tune the whole vision tower on fractions of ``train_path`` against the same architecture
    from random init (:mod:`mmcl.eval.finetune`), scored on this dataset."""
    x_tr, y_tr, s_tr = _labelled_images(adapter, data, "train")
    x_te, y_te, s_te = _labelled_images(adapter, data, "test")
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
