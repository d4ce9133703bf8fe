"""Fine-tuning transfer: full fine-tuning of a pretrained image encoder on a small labelled subset.

The linear probe and kNN read out frozen features. This evaluation asks a different question: how much
does the pretrained initialisation help when *every* weight is trained on few labels? It is the
semi-supervised protocol of SimCLR (Chen et al. 2020) and MoCo v2 / BYOL follow-ups, which fine-tune
on 1% and 10% of ImageNet's labels: a seeded, class-stratified subset of the training split is drawn,
the encoder plus a new linear head is trained on it, and top-k accuracy is reported on the test split.
The same architecture trained from scratch on the same subset, with the same recipe and seed, is the
baseline, so ``gain = pretrained - scratch`` isolates what the pretraining contributed.

Recipe (deliberately simple and fixed, so runs are comparable rather than tuned): AdamW, linear warm-up
over the first 5% of steps followed by cosine decay, no weight decay on biases and normalisation
parameters, cross-entropy, random horizontal flip and random translation (4-pixel reflect padding,
random crop back to size) as augmentation, BatchNorm in train mode. The model is then scored in eval
mode. Inputs are already-preprocessed image tensors (N, 3, H, W), e.g. the eval adapter's transform.

Everything random is seeded by ``seed``: shuffling and augmentation draw from a ``torch.Generator``,
and the head initialisation, any dropout, and the scratch model's construction run with the global
RNG forked and seeded, so the caller's random state is left as it was and a run is reproducible
(bit-identical on CPU; on GPU up to non-deterministic kernels). The caller's backbone is deep-copied and
never modified.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .linear_probe import _check_labels, _check_positive_int
from .metrics import classification_metrics

WARMUP_FRACTION = 0.05  # of all optimiser steps, at least one step
TRANSLATE_PAD = 4  # pixels of reflect padding for the random translation

# ----------------------------------------------------------------------------------------------- checks


def _check_fraction(fraction: float) -> None:
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not math.isfinite(fraction)
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"fraction must be a number in (0, 1] (e.g. 0.01 for 1%), got {fraction!r}")


def _check_images(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"x_{name} must be 4-D image tensors (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x_{name} must be floating point (preprocessed images), got dtype {x.dtype}")
    _check_labels(y, name)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x_{name} has {x.shape[0]} images but y_{name} has {y.shape[0]} labels")


def _check_hparams(epochs: int, batch_size: int, lr: float, weight_decay: float) -> None:
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")


# --------------------------------------------------------------------------------------------- sampling


def subset_per_class(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Class-stratified random subset: ``round(fraction * n_c)`` items (at least 1) of every class ``c``.

    Parameters
    ----------
    labels : (N,) integer labels; items with a label < 0 (unlabelled) are never drawn.
    fraction : share of every class to keep, in (0, 1].
    seed : classes are visited in increasing order, all drawing from one generator seeded with it.

    Returns
    -------
    Sorted (M,) long tensor of indices into ``labels``.
    """
    _check_fraction(fraction)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.cpu()
    classes = torch.unique(labels[labels >= 0]).tolist()
    if not classes:
        raise ValueError("labels has no labelled item (every label is < 0, or it is empty)")
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        n_keep = max(1, round(fraction * members.numel()))
        picked.append(members[torch.randperm(members.numel(), generator=gen)[:n_keep]])
    return torch.cat(picked).sort().values


# ----------------------------------------------------------------------------------------- augmentation


def _translate(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of ``x`` (B, C, H, W) back to (H, W) from its reflect-padded copy.

    ``offsets`` (B, 2) are the (row, column) corners in the padded image, in ``[0, 2 * pad]``;
    ``(pad, pad)`` is the identity.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices split by the channel slice: result is (B, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random translation, drawn per image from ``gen`` (a CPU generator)."""
    b, _, h, w = x.shape
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = min(TRANSLATE_PAD, h - 1, w - 1)  # reflect padding must be smaller than the image
    if pad < 1:
        return x
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).to(x.device)
    return _translate(x, offsets, pad)


# ------------------------------------------------------------------------------------------------ train


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU, and ``device`` if CUDA), seed it, and restore it on exit."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled index batches: ``ceil(n / batch_size)`` of them, none with a single item.

    A last batch of one item (BatchNorm cannot train on it) is topped up with one more item drawn at
    random from the rest of the epoch, or with the item itself when ``n == 1`` (its two copies are
    augmented independently).
    """
    order = torch.randperm(n, generator=gen)
    batches = list(order.split(batch_size))
    if batches[-1].numel() == 1:
        extra = order[torch.randint(n - 1, (1,), generator=gen)] if n > 1 else order
        batches[-1] = torch.cat([batches[-1], extra])
    return batches


def _lr_at(step: int, total: int, base_lr: float) -> float:
    """Linear warm-up over ``WARMUP_FRACTION`` of the steps, then cosine decay (never exactly 0)."""
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only, not on biases and normalisation parameters."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _default_device(backbone: nn.Module, x: torch.Tensor) -> torch.device:
    param = next(backbone.parameters(), None)
    return param.device if param is not None else x.device


def finetune_classifier(
    backbone: nn.Module,
    num_features: int,
    num_classes: int,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Fine-tune a copy of ``backbone`` plus a new linear head on all its parameters; score the test set.

    Parameters
    ----------
    backbone : maps (B, C, H, W) images to pooled features (B, num_features). Deep-copied: the caller's
        module (weights, ``requires_grad`` flags, train/eval mode) is never modified. Every parameter
        of the copy is trained, frozen or not in the original.
    num_features, num_classes : the head is ``nn.Linear(num_features, num_classes)`` (PyTorch's default
        initialisation, seeded).
    x_train, y_train : (N, C, H, W) preprocessed float images and (N,) labels in ``[0, num_classes)``.
    x_test, y_test : the scored split, same conventions.
    epochs : passes over the training set, each of ``ceil(N / batch_size)`` steps (one step of the
        whole set when ``N <= batch_size``); a one-item last batch is topped up to two items so
        BatchNorm never trains on a single item.
    lr, weight_decay : AdamW peak learning rate (warm-up then cosine decay) and decoupled weight decay
        (not applied to biases and normalisation parameters).
    seed : seeds shuffling, augmentation, head initialisation and dropout; same seed, same result.
    device : where to train; default the backbone's device (the images' device if it has no parameters).
        Images are moved there one batch at a time.

    Returns
    -------
    ``classification_metrics`` of the test logits ("acc1", "acc5" (NaN with fewer than 5 classes),
    "mean_per_class_recall"), plus "num_train" (N) and "epochs".
    """
    _check_images(x_train, y_train, "train")
    _check_images(x_test, y_test, "test")
    _check_positive_int(num_features, "num_features")
    _check_positive_int(num_classes, "num_classes")
    _check_hparams(epochs, batch_size, lr, weight_decay)
    for name, y in (("train", y_train), ("test", y_test)):
        if int(y.max()) >= num_classes:
            raise ValueError(f"num_classes={num_classes} but y_{name} contains class {int(y.max())}")
    device = torch.device(device) if device is not None else _default_device(backbone, x_train)
    n = x_train.shape[0]
    y_train_dev = y_train.to(device=device, dtype=torch.long)
    batches_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * batches_per_epoch
    gen = torch.Generator().manual_seed(seed)

    with _seeded_global_rng(seed, device), torch.inference_mode(False), torch.enable_grad():
        model = nn.Sequential(copy.deepcopy(backbone), nn.Linear(num_features, num_classes))
        model = model.to(device).requires_grad_(True).train()
        optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
        step = 0
        for _ in range(epochs):
            for idx in _batches(n, batch_size, gen):
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, total_steps, lr)
                x = _augment(x_train[idx.to(x_train.device)].to(device), gen)
                loss = F.cross_entropy(model(x), y_train_dev[idx.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1

    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(x_test[s : s + batch_size].to(device)).float().cpu() for s in range(0, x_test.shape[0], batch_size)]
        )
    out: dict[str, float] = classification_metrics(logits, y_test.cpu().long(), ks=(1, 5))
    out.update(num_train=n, epochs=epochs)
    return out


# --------------------------------------------------------------------------------------------- transfer


def _fraction_key(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def finetune_transfer(
    backbone: nn.Module,
    make_scratch: Callable[[], nn.Module],
    num_features: int,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    fractions: Sequence[float] = (0.01, 0.1),
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Pretrained vs from-scratch full fine-tuning on class-stratified fractions of the training set.

    Parameters
    ----------
    backbone : the pretrained encoder, (B, C, H, W) -> (B, num_features); never modified.
    make_scratch : returns a freshly initialised module of the same architecture. It is called once per
        fraction with the global RNG forked and seeded by ``seed``, so every fraction starts from the
        same reproducible scratch initialisation.
    x_train, y_train : training images and labels; items with a label < 0 are never drawn.
    x_test, y_test : scored split; items with a label < 0 are dropped.
    fractions : shares of every class to train on (see :func:`subset_per_class`).
    epochs, batch_size, lr, weight_decay, seed, device : passed to :func:`finetune_classifier`, identical
        for both models.
    progress : show a progress bar over the runs.

    Returns
    -------
    Flat dict, for every fraction with prefix ``p = f"{100 * fraction:g}%"`` (e.g. "1%", "10%"):
    ``f"{p}/pretrained_{m}"``, ``f"{p}/scratch_{m}"`` and ``f"{p}/gain_{m}"`` (pretrained - scratch) for
    ``m`` in "acc1", "acc5", "mean_per_class_recall"; ``f"{p}/num_train"``; and "num_test". The number
    of classes is ``max(label over train and test) + 1``.
    """
    fractions = list(fractions)
    if not fractions:
        raise ValueError("fractions is empty")
    for f in fractions:
        _check_fraction(f)
    keys = [_fraction_key(f) for f in fractions]
    if len(set(keys)) != len(keys):
        raise ValueError(f"fractions must be distinct, got {fractions!r}")
    _check_images(x_train, y_train.clamp(min=0), "train")  # negative train labels mean unlabelled
    if y_test.ndim != 1 or x_test.shape[:1] != y_test.shape:
        raise ValueError(f"x_test has shape {tuple(x_test.shape)} but y_test has shape {tuple(y_test.shape)}")
    keep = y_test >= 0
    x_test, y_test = x_test[keep.to(x_test.device)], y_test[keep]
    if y_test.numel() == 0:
        raise ValueError("the test set has no labelled item (every label is < 0, or it is empty)")
    _check_images(x_test, y_test, "test")
    num_classes = max(int(y_train.max()), int(y_test.max())) + 1
    device = torch.device(device) if device is not None else _default_device(backbone, x_train)

    out: dict[str, float] = {}
    runs = tqdm(total=2 * len(fractions), desc="fine-tune transfer", disable=not progress, leave=False)
    for fraction, prefix in zip(fractions, keys):
        idx = subset_per_class(y_train, fraction, seed)
        x_sub, y_sub = x_train[idx.to(x_train.device)], y_train[idx.to(y_train.device)]
        with _seeded_global_rng(seed, device):
            scratch = make_scratch()
        results = {}
        for name, model in (("pretrained", backbone), ("scratch", scratch)):
            runs.set_postfix_str(f"{prefix} {name}")
            results[name] = finetune_classifier(
                model,
                num_features,
                num_classes,
                x_sub,
                y_sub,
                x_test,
                y_test,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                seed=seed,
                device=device,
            )
            runs.update()
        for metric in ("acc1", "acc5", "mean_per_class_recall"):
            pre, scr = results["pretrained"][metric], results["scratch"][metric]
            out[f"{prefix}/pretrained_{metric}"] = pre
            out[f"{prefix}/scratch_{metric}"] = scr
            out[f"{prefix}/gain_{metric}"] = pre - scr
        out[f"{prefix}/num_train"] = int(idx.numel())
    runs.close()
    out["num_test"] = int(y_test.shape[0])
    return out
