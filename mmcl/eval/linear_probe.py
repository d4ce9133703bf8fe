"""Linear probe: multinomial logistic regression on cached (frozen) features.

The standard read-out of representation quality (CLIP, CLIP_benchmark's "linear_probe" task): fit a
linear classifier on the training split's features and report top-k accuracy on the test split.

Objective, for a weight matrix W (C, D) and bias b (C,)::

    mean_i cross_entropy(W x_i + b, y_i) + weight_decay / 2 * ||W||^2      (the bias is not penalised)

This is sklearn's ``LogisticRegression(C=1 / (weight_decay * n_train))``: same minimiser. It is convex, so
it is fitted full-batch with L-BFGS (strong-Wolfe line search) from a zero initialisation, which makes
the result deterministic and independent of any random state.

Weight decay is chosen on a validation split (the given one, or a seeded, per-class held-out fraction of
the training set) by top-1 accuracy, ties going to the larger weight decay (the simpler model). The
default grid is ``torch.logspace(-6, 2, 9)`` (one point per decade) followed by a local refinement: five
log-spaced points strictly between the best point's two neighbours (third-of-a-decade resolution), in the
spirit of CLIP_benchmark's coarse-to-fine search over ``logspace(-6, 2, 97)`` at a fraction of the fits.
A grid passed by the caller is used as is. The classifier is then refitted on train + validation with
the chosen weight decay and evaluated on the test set.

``few_shot_indices`` draws k items per class for k-shot probes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .metrics import classification_metrics

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = tuple(torch.logspace(-6, 2, 9, dtype=torch.float64).tolist())
_REFINE_POINTS = 5


# ----------------------------------------------------------------------------------------------- checks


def _check_labelled(features: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    """(N, D) features with (N,) non-negative integer labels, N >= 1."""
    if features.ndim != 2:
        raise ValueError(f"{name}_features must be 2-D (N, D), got shape {tuple(features.shape)}")
    _check_labels(labels, name)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}_features has {features.shape[0]} rows but {name}_labels has {labels.shape[0]} entries"
        )


def _check_labels(labels: torch.Tensor, name: str) -> None:
    if labels.ndim != 1:
        raise ValueError(f"{name}_labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        raise ValueError(f"{name} set is empty")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name}_labels must be integers, got dtype {labels.dtype}")
    if int(labels.min()) < 0:
        raise ValueError(f"{name}_labels must be non-negative, got minimum {int(labels.min())}")


def _check_weight_decay(wd: float) -> None:
    if not (math.isfinite(wd) and wd >= 0):
        raise ValueError(f"weight decay must be a finite number >= 0, got {wd!r}")


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# --------------------------------------------------------------------------------------------- sampling


def few_shot_indices(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``k`` random items of every class (all of a class with fewer than ``k``).

    Deterministic for a given ``seed`` (classes are visited in increasing order with one generator).
    """
    _check_labels(labels, "few-shot")
    _check_positive_int(k, "k")
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
    return torch.cat(picked).sort().values


def _train_val_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) index split holding out about ``val_fraction`` of every class.

    Each class keeps at least one training item. If that leaves no validation item at all (e.g. one item
    per class), about ``val_fraction`` of all items are held out at random instead.
    """
    labels = labels.cpu()
    n = labels.shape[0]
    if n < 2:
        raise ValueError("cannot hold out a validation split from a single training item; pass val_features")
    gen = torch.Generator().manual_seed(seed)
    val = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        n_val = min(round(val_fraction * members.numel()), members.numel() - 1)
        val.append(members[torch.randperm(members.numel(), generator=gen)[:n_val]])
    val_idx = torch.cat(val)
    if val_idx.numel() == 0:
        n_val = min(max(1, round(val_fraction * n)), n - 1)
        val_idx = torch.randperm(n, generator=gen)[:n_val]
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[val_idx] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


# -------------------------------------------------------------------------------------------------- fit


def _penalised_loss(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
    return F.cross_entropy(model(x), y) + 0.5 * weight_decay * model.weight.pow(2).sum()


def _zero_linear(in_features: int, out_features: int, device: torch.device) -> torch.nn.Linear:
    """A zero-initialised nn.Linear (skip_init: the global random state is not touched)."""
    model = torch.nn.utils.skip_init(torch.nn.Linear, in_features, out_features, device=device)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return model


def _lbfgs_fit(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int
) -> torch.nn.Linear:
    """Minimise the penalised loss over a zero-initialised nn.Linear; every class must occur in ``y``."""
    with torch.inference_mode(False), torch.enable_grad():
        # clone: features made under inference_mode cannot be saved for backward
        x, y = x.clone(), y.clone()
        model = _zero_linear(x.shape[1], num_classes, x.device)
        optimizer = torch.optim.LBFGS(
            model.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = _penalised_loss(model, x, y, weight_decay)
            loss.backward()
            return loss

        optimizer.step(closure)
    return model.requires_grad_(False)


def fit_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    weight_decay: float,
    num_classes: int | None = None,
    max_iter: int = 1000,
    device: torch.device | str | None = None,
) -> torch.nn.Linear:
    """Fit ``nn.Linear(D, num_classes)`` minimising mean cross-entropy + ``weight_decay / 2 * ||W||^2``.

    Full-batch L-BFGS with strong-Wolfe line search, float32, zero initialisation (deterministic).
    ``device`` defaults to the features' device; features and the returned model live there. Works
    inside ``torch.no_grad()`` / ``torch.inference_mode()`` blocks.

    Classes in ``range(num_classes)`` with no training item have no finite optimum (their bias tends to
    -inf), so only the classes present are fitted and the others get weight 0 and bias -inf: they are
    never predicted, as in sklearn, which only knows the classes it was fitted on.
    """
    _check_labelled(train_features, train_labels, "train")
    _check_weight_decay(weight_decay)
    _check_positive_int(max_iter, "max_iter")
    max_label = int(train_labels.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif num_classes <= max_label:
        raise ValueError(f"num_classes={num_classes} but train_labels contains class {max_label}")
    device = torch.device(device) if device is not None else train_features.device
    x = train_features.detach().to(device=device, dtype=torch.float32)
    y = train_labels.detach().to(device=device, dtype=torch.long)
    present = torch.bincount(y, minlength=num_classes) > 0
    if bool(present.all()):
        return _lbfgs_fit(x, y, num_classes, weight_decay, max_iter)
    local = _lbfgs_fit(x, (present.cumsum(0) - 1)[y], int(present.sum()), weight_decay, max_iter)
    model = _zero_linear(x.shape[1], num_classes, device).requires_grad_(False)
    model.weight[present] = local.weight
    model.bias.fill_(-math.inf)
    model.bias[present] = local.bias
    return model


def _logits(model: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(features.to(device=model.weight.device, dtype=torch.float32)).cpu()


def _top1(model: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    return (_logits(model, features).argmax(dim=1) == labels.cpu()).float().mean().item()


# ------------------------------------------------------------------------------------ weight decay search


def _refinement(grid: Sequence[float], best: int) -> list[float]:
    """Log-spaced points strictly between the neighbours of ``grid[best]`` (grid sorted ascending)."""
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    points = torch.logspace(math.log10(lo), math.log10(hi), _REFINE_POINTS + 2, dtype=torch.float64)
    return points[1:-1].tolist()


def _best(val_acc: dict[float, float]) -> float:
    """Weight decay with the highest accuracy; ties go to the larger weight decay."""
    return max(val_acc, key=lambda wd: (val_acc[wd], wd))


def _select_weight_decay(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    grid: Sequence[float],
    refine: bool,
    num_classes: int,
    device: torch.device | str | None,
) -> tuple[float, float]:
    """(chosen weight decay, its validation top-1 accuracy)."""
    val_acc: dict[float, float] = {}

    def evaluate(wds: Sequence[float]) -> None:
        for wd in wds:
            if not any(math.isclose(wd, seen, rel_tol=1e-9) for seen in val_acc):
                model = fit_linear_probe(*train, wd, num_classes=num_classes, device=device)
                val_acc[wd] = _top1(model, *val)

    grid = sorted(grid)
    evaluate(grid)
    if refine and len(grid) > 1:
        evaluate(_refinement(grid, grid.index(_best(val_acc))))
    chosen = _best(val_acc)
    return chosen, val_acc[chosen]


# ------------------------------------------------------------------------------------------------ probe


def _take(features: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features[idx.to(features.device)], labels[idx.to(labels.device)]


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    val_features: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    weight_decays: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    k_shot: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Linear-probe accuracy with weight decay chosen on a validation split.

    Args:
        train_features, train_labels: (N, D) features and (N,) integer labels of the training split.
        test_features, test_labels: the split that is reported.
        val_features, val_labels: an explicit validation split; if omitted, ``val_fraction`` of every
            class of the training split is held out (seeded by ``seed``).
        weight_decays: grid to search; default ``logspace(-6, 2, 9)`` plus a local refinement (see the
            module docstring). A given grid is searched as is.
        k_shot: if given, the training split is first reduced to ``k_shot`` items per class.
        device: where to fit (default: the training features' device).

    Returns:
        "acc1", "acc5" (NaN with fewer than 5 classes), "mean_per_class_recall" on the test split;
        "weight_decay" (chosen), "val_acc1" (its validation top-1 accuracy), "num_train" (items of the
        final fit: train + validation, after any k-shot subsampling) and "num_test".
    """
    _check_labelled(train_features, train_labels, "train")
    _check_labelled(test_features, test_labels, "test")
    if (val_features is None) != (val_labels is None):
        raise ValueError("pass both val_features and val_labels, or neither")
    dims = {"train": train_features.shape[1], "test": test_features.shape[1]}
    if val_features is not None:
        _check_labelled(val_features, val_labels, "val")
        dims["val"] = val_features.shape[1]
    if len(set(dims.values())) > 1:
        raise ValueError(f"feature dimensions differ between splits: {dims}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    grid = list(DEFAULT_WEIGHT_DECAYS) if weight_decays is None else [float(wd) for wd in weight_decays]
    if not grid:
        raise ValueError("weight_decays is empty")
    for wd in grid:
        _check_weight_decay(wd)

    if k_shot is not None:
        train_features, train_labels = _take(train_features, train_labels, few_shot_indices(train_labels, k_shot, seed))
    if val_features is None:
        tr, va = _train_val_split(train_labels, val_fraction, seed)
        val_features, val_labels = _take(train_features, train_labels, va)
        train_features, train_labels = _take(train_features, train_labels, tr)

    labels = (train_labels, val_labels, test_labels)
    num_classes = max(int(lab.max()) for lab in labels) + 1
    wd, val_acc1 = _select_weight_decay(
        (train_features, train_labels),
        (val_features, val_labels),
        grid,
        refine=weight_decays is None,
        num_classes=num_classes,
        device=device,
    )
    all_features = torch.cat([train_features, val_features.to(train_features.device)])
    all_labels = torch.cat([train_labels, val_labels.to(train_labels.device)])
    model = fit_linear_probe(all_features, all_labels, wd, num_classes=num_classes, device=device)
    out: dict[str, float] = classification_metrics(_logits(model, test_features), test_labels.cpu().long(), ks=(1, 5))
    out.update(
        weight_decay=wd, val_acc1=val_acc1, num_train=int(all_labels.shape[0]), num_test=int(test_labels.shape[0])
    )
    return out
