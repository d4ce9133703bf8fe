"""Linear probe and kNN on a model's frozen image features, from labelled datasets."""

from __future__ import annotations

from ..errors import ConfigError
from .encode import encode_dataset
from .knn import knn_metrics
from .linear_probe import linear_probe


def _labelled_features(adapter, data, batch_size, num_workers, progress):
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=False, progress=progress)
    keep = enc.labels >= 0
    if not keep.any():
        raise ConfigError(f"{data.name}: no labelled images (class subfolders, or a label column)")
    return enc.image_features[keep], enc.labels[keep], enc.skipped


def _with_skips(metrics: dict, **skipped) -> dict:
    skipped = {name: s for name, s in skipped.items() if s}
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def evaluate_linear_probe(
    adapter,
    train,
    test,
    val=None,
    k_shot=None,
    weight_decays=None,
    batch_size=64,
    num_workers=0,
    seed=0,
    progress=True,
) -> dict:
    """Logistic regression on cached features of ``train``; weight decay chosen on ``val`` (or a
    seeded split of ``train``), then refitted on train + val and scored on ``test``."""
    xtr, ytr, s_tr = _labelled_features(adapter, train, batch_size, num_workers, progress)
    xte, yte, s_te = _labelled_features(adapter, test, batch_size, num_workers, progress)
    xva = yva = s_va = None
    if val is not None:
        xva, yva, s_va = _labelled_features(adapter, val, batch_size, num_workers, progress)
    metrics = linear_probe(
        xtr,
        ytr,
        xte,
        yte,
        val_features=xva,
        val_labels=yva,
        weight_decays=weight_decays,
        k_shot=k_shot,
        seed=seed,
        device=adapter.device,
    )
    return _with_skips(metrics, train=s_tr, test=s_te, val=s_va)


def evaluate_knn(adapter, train, test, k=20, temperature=0.07, batch_size=64, num_workers=0, progress=True) -> dict:
    """Weighted kNN: ``test`` images classified by their ``k`` nearest ``train`` images."""
    xtr, ytr, s_tr = _labelled_features(adapter, train, batch_size, num_workers, progress)
    xte, yte, s_te = _labelled_features(adapter, test, batch_size, num_workers, progress)
    metrics = knn_metrics(xtr, ytr, xte, yte, k=k, temperature=temperature)
    return _with_skips(metrics, train=s_tr, test=s_te)
