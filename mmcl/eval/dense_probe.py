"""Per-pixel linear probe: how much of a segmentation the frozen backbone's feature map holds.

A linear classifier (a 1x1 convolution) is trained on the frozen features at every location of the
backbone's feature map; its logits are upsampled bilinearly to the mask's resolution and scored
per pixel, the usual linear segmentation probe for dense self-supervised learning (DenseCL,
DINO). Features are standardised per channel with the training set's mean and std first (a
BatchNorm without affine parameters), which makes one learning rate work for any backbone.

Metrics: ``pixel_acc`` (all pixels), ``mean_iou`` (intersection over union averaged over the
classes that occur in the test masks or the predictions), ``mean_class_acc`` (per-class pixel
recall averaged over the classes in the test masks), ``foreground_iou`` (any class vs background
0, when class 0 is present).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.csv_jsonl import check_columns, read_table
from ..data.images import BAD_IMAGE_ERRORS, load_image
from ..errors import ConfigError


def load_segmentation(
    path: str,
    image_key: str,
    mask_key: str,
    size: int,
    mean,
    std,
    separator: str = ",",
    max_items: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Images (N, 3, size, size), normalised, and masks (N, size, size) of class indices, from a
    CSV/JSONL with an image column and a mask column (single-channel PNGs whose pixel values are
    class indices; paths relative to the file). Both are resized to ``size`` x ``size`` (bicubic
    for the image, nearest for the mask), without cropping, so they stay in register. Unreadable
    rows are skipped and counted."""
    rows = read_table(path, separator)[:max_items]
    if not rows:
        raise ConfigError(f"{path}: no rows")
    check_columns(rows, path, {"image_key": image_key, "mask_key": mask_key})
    root = Path(path).parent
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    images, masks, skipped = [], [], Counter()
    for row in rows:
        image, reason = load_image(root / str(row[image_key]))
        if image is None:
            skipped[reason] += 1
            continue
        try:
            with Image.open(root / str(row[mask_key])) as m:
                mask = m.convert("L") if m.mode not in ("L", "P", "I;16", "I") else m.copy()
        except (FileNotFoundError, IsADirectoryError):
            skipped["missing_mask"] += 1
            continue
        except BAD_IMAGE_ERRORS:
            skipped["corrupt_mask"] += 1
            continue
        pixels = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        images.append((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)
        masks.append(torch.from_numpy(np.asarray(mask.resize((size, size), Image.NEAREST)).astype(np.int64)))
    if not images:
        raise ConfigError(f"{path}: no readable image/mask pairs (skipped: {dict(skipped)})")
    return torch.stack(images), torch.stack(masks), dict(skipped)


@torch.no_grad()
def dense_features(encode, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``encode`` (images -> (B, C, h, w)) over ``images`` in batches, on CPU."""
    return torch.cat([encode(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


def segmentation_metrics(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> dict[str, float]:
    """Pixel accuracy, mean IoU, mean per-class accuracy and foreground IoU of integer maps; target
    pixels equal to ``ignore_index`` (e.g. VOC's 255 object borders) are left out."""
    pred, target = pred.flatten().long(), target.flatten().long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    confusion = confusion.double()
    tp = confusion.diag()
    in_target, in_pred = confusion.sum(1), confusion.sum(0)
    union = in_target + in_pred - tp
    seen = union > 0
    out = {
        "pixel_acc": float(tp.sum() / confusion.sum()),
        "mean_iou": float((tp[seen] / union[seen]).mean()),
        "mean_class_acc": float((tp[in_target > 0] / in_target[in_target > 0]).mean()),
        "num_classes_present": int((in_target > 0).sum()),
    }
    if in_target[0] > 0:
        fg_t, fg_p = target > 0, pred > 0
        out["foreground_iou"] = float((fg_t & fg_p).sum() / (fg_t | fg_p).sum().clamp(min=1))
    return out


def _logits(probe: torch.nn.Conv2d, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(probe(feats), size=size, mode="bilinear", align_corners=False)


def dense_probe(
    train_features: torch.Tensor,
    train_masks: torch.Tensor,
    test_features: torch.Tensor,
    test_masks: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 30,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    ignore_index: int | None = 255,
) -> dict:
    """Fit a 1x1-conv classifier on (N, C, h, w) frozen features against (N, H, W) masks and score
    the test set (see the module docstring for the metrics). Mask pixels equal to ``ignore_index``
    (VOC marks object borders 255) are neither trained on nor scored.

    Adam with a cosine decay over ``epochs``, mini-batches in a seeded order: deterministic for a
    given ``seed``."""
    if train_features.ndim != 4 or test_features.ndim != 4:
        raise ValueError(
            f"expected (N, C, h, w) features, got {tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    if train_masks.shape[0] != train_features.shape[0] or test_masks.shape[0] != test_features.shape[0]:
        raise ValueError("features and masks must have the same number of items")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if num_classes is None:
        labels = torch.cat([train_masks.unique(), test_masks.unique()])
        num_classes = (
            int(labels[labels != ignore_index].max()) + 1 if ignore_index is not None else int(labels.max()) + 1
        )
    device = torch.device(device or "cpu")
    mean = train_features.mean(dim=(0, 2, 3), keepdim=True)
    std = train_features.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Conv2d(train_features.shape[1], num_classes, kernel_size=1).to(device)
    with torch.no_grad():
        probe.weight.normal_(0, 0.01, generator=generator)
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    n = train_features.shape[0]
    steps = epochs * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    size = tuple(train_masks.shape[1:])
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            x = ((train_features[idx] - mean) / std).to(device)
            target = train_masks[idx].to(device)
            loss = F.cross_entropy(
                _logits(probe, x, size), target, ignore_index=-100 if ignore_index is None else ignore_index
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    preds = []
    with torch.no_grad():
        for idx in torch.arange(test_features.shape[0]).split(batch_size):
            x = ((test_features[idx] - mean) / std).to(device)
            preds.append(_logits(probe, x, tuple(test_masks.shape[1:])).argmax(1).cpu())
    metrics = segmentation_metrics(torch.cat(preds), test_masks, num_classes, ignore_index)
    metrics.update(num_train=n, num_test=int(test_features.shape[0]), feature_grid=list(train_features.shape[2:]))
    return metrics
