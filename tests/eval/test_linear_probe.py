"""Linear probe: sklearn parity of the fit, weight-decay selection, few-shot sampling and argument checks."""

import math

import numpy as np
import pytest
import torch

from mmcl.eval.linear_probe import (
    DEFAULT_WEIGHT_DECAYS,
    _refinement,
    few_shot_indices,
    fit_linear_probe,
    linear_probe,
)


def blobs(n_per_class, num_classes, dim, spread, seed, centers_seed=None):
    """Gaussian blobs: class centres ~ N(0, spread^2 I) (seeded by ``centers_seed``), unit noise."""
    centers_gen = torch.Generator().manual_seed(seed if centers_seed is None else centers_seed)
    centers = spread * torch.randn(num_classes, dim, generator=centers_gen)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    noise = torch.randn(labels.shape[0], dim, generator=torch.Generator().manual_seed(seed))
    return centers[labels] + noise, labels


def val_top1(model, features, labels):
    with torch.no_grad():
        return (model(features).argmax(dim=1) == labels).float().mean().item()


def test_separable_blobs_are_classified_perfectly():
    train, train_labels = blobs(20, 6, 8, spread=4.0, seed=0, centers_seed=10)
    test, test_labels = blobs(15, 6, 8, spread=4.0, seed=1, centers_seed=10)
    out = linear_probe(train, train_labels, test, test_labels, weight_decays=[1e-4, 1e-2, 1.0])
    assert out["acc1"] >= 0.97 and out["acc5"] == 1.0 and out["mean_per_class_recall"] >= 0.97
    assert out["val_acc1"] >= 0.95
    assert out["weight_decay"] in (1e-4, 1e-2, 1.0)
    assert out["num_train"] == 120 and out["num_test"] == 90


@pytest.mark.parametrize("weight_decay", [1e-2, 0.3])
def test_fit_matches_sklearn_logistic_regression(weight_decay):
    from sklearn.linear_model import LogisticRegression

    train, labels = blobs(20, 3, 5, spread=1.0, seed=2)  # overlapping classes: a well-conditioned optimum
    query, _ = blobs(10, 3, 5, spread=1.0, seed=3, centers_seed=2)
    model = fit_linear_probe(train, labels, weight_decay)
    with torch.no_grad():
        ours = torch.softmax(model(query), dim=1).numpy()
    # sklearn minimises 0.5 ||W||^2 + C * sum(loss), ours mean(loss) + wd/2 ||W||^2: equal when C = 1/(wd n)
    sk = LogisticRegression(C=1.0 / (weight_decay * labels.shape[0]), tol=1e-10, max_iter=10_000)
    sk.fit(train.double().numpy(), labels.numpy())
    np.testing.assert_allclose(ours, sk.predict_proba(query.double().numpy()), atol=1e-3)


def test_fit_is_deterministic_and_leaves_rng_alone():
    train, labels = blobs(10, 4, 6, spread=2.0, seed=4)
    torch.manual_seed(123)
    first = fit_linear_probe(train, labels, 1e-3)
    after = torch.rand(1)
    torch.manual_seed(123)
    second = fit_linear_probe(train, labels, 1e-3)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert torch.equal(after, torch.rand(1))
    assert first.weight.dtype == torch.float32 and not first.weight.requires_grad


def test_fit_works_under_inference_mode():
    train, labels = blobs(10, 3, 4, spread=3.0, seed=5)
    reference = fit_linear_probe(train, labels, 1e-2)
    with torch.inference_mode():
        model = fit_linear_probe(train.clone(), labels.clone(), 1e-2)
        out = linear_probe(train.clone(), labels.clone(), train.clone(), labels.clone(), weight_decays=[1e-2])
    assert torch.allclose(model.weight, reference.weight)
    assert out["acc1"] > 0.9


def test_fit_num_classes_adds_unseen_classes():
    train, labels = blobs(5, 3, 4, spread=3.0, seed=6)
    model = fit_linear_probe(train, labels, 1e-2, num_classes=5)
    assert model.weight.shape == (5, 4)
    # unseen classes have no finite optimum: weight 0, bias -inf, never predicted; the others are unchanged
    assert torch.equal(model.bias[3:], torch.full((2,), -math.inf)) and not model.weight[3:].any()
    reference = fit_linear_probe(train, labels, 1e-2)
    assert torch.equal(model.weight[:3], reference.weight) and torch.equal(model.bias[:3], reference.bias)
    # a gap in the labels (class 1 absent) is handled the same way
    keep = labels != 1
    model = fit_linear_probe(train[keep], labels[keep], 1e-2)
    assert model.bias[1] == -math.inf and model(train).argmax(dim=1).ne(1).all()
    with pytest.raises(ValueError, match="num_classes=2 but train_labels contains class 2"):
        fit_linear_probe(train, labels, 1e-2, num_classes=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu():
    train, labels = blobs(20, 4, 6, spread=1.0, seed=7)
    cpu = fit_linear_probe(train, labels, 1e-2)
    gpu = fit_linear_probe(train, labels, 1e-2, device="cuda")
    assert gpu.weight.device.type == "cuda"
    assert torch.allclose(gpu.weight.cpu(), cpu.weight, atol=1e-3)
    out = linear_probe(train.cuda(), labels.cuda(), train.cuda(), labels.cuda(), weight_decays=[1e-2])
    assert out["acc1"] > 0.5


def test_few_shot_indices_takes_k_per_class_deterministically():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    idx = few_shot_indices(labels, 5, seed=1)
    assert torch.equal(torch.bincount(labels[idx]), torch.tensor([5, 3, 5]))
    assert idx.unique().numel() == idx.numel() and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, few_shot_indices(labels, 5, seed=1))
    assert any(not torch.equal(idx, few_shot_indices(labels, 5, seed=s)) for s in range(2, 6))
    assert torch.equal(few_shot_indices(labels, 100), torch.arange(20))


def test_k_shot_probe_uses_k_items_per_class():
    train, train_labels = blobs(20, 4, 6, spread=3.0, seed=8, centers_seed=18)
    test, test_labels = blobs(5, 4, 6, spread=3.0, seed=9, centers_seed=18)
    out = linear_probe(train, train_labels, test, test_labels, k_shot=3, weight_decays=[1e-2, 1.0])
    assert out["num_train"] == 12 and out["num_test"] == 20
    # one shot: no class can spare a validation item, so a random item is held out instead
    out = linear_probe(train, train_labels, test, test_labels, k_shot=1, weight_decays=[1e-2, 1.0])
    assert out["num_train"] == 4


def test_weight_decay_is_the_argmax_of_validation_accuracy():
    # few, noisy, high-dimensional training items: validation accuracy depends on the weight decay
    train, train_labels = blobs(4, 3, 30, spread=0.5, seed=3, centers_seed=103)
    val, val_labels = blobs(30, 3, 30, spread=0.5, seed=1003, centers_seed=103)
    test, test_labels = blobs(10, 3, 30, spread=0.5, seed=2003, centers_seed=103)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    out = linear_probe(train, train_labels, test, test_labels, val, val_labels, weight_decays=grid)

    accs = [val_top1(fit_linear_probe(train, train_labels, wd), val, val_labels) for wd in grid]
    assert len(set(accs)) > 1, "the data should make the choice matter"
    best = max(accs)
    expected = max(wd for wd, acc in zip(grid, accs) if acc == best)  # ties go to the larger weight decay
    assert out["weight_decay"] == expected
    assert out["val_acc1"] == pytest.approx(best)
    assert out["num_train"] == train.shape[0] + val.shape[0]


def test_default_grid_is_refined_around_the_best_point():
    grid = list(DEFAULT_WEIGHT_DECAYS)
    assert grid == pytest.approx(torch.logspace(-6, 2, 9).tolist())
    refined = _refinement(grid, 3)  # best 1e-3: five points strictly between 1e-4 and 1e-2
    assert refined == pytest.approx([10 ** (-4 + j / 3) for j in range(1, 6)])
    assert _refinement(grid, 0)[0] > grid[0] and _refinement(grid, 8)[-1] < grid[8]

    train, train_labels = blobs(4, 3, 30, spread=0.5, seed=3, centers_seed=103)
    val, val_labels = blobs(30, 3, 30, spread=0.5, seed=1003, centers_seed=103)
    out = linear_probe(train, train_labels, val[:10], val_labels[:10], val, val_labels)
    coarse = [val_top1(fit_linear_probe(train, train_labels, wd), val, val_labels) for wd in grid]
    assert out["val_acc1"] >= max(coarse) - 1e-6
    assert grid[0] <= out["weight_decay"] <= grid[-1]


def test_internal_validation_split_is_seeded():
    train, train_labels = blobs(8, 3, 10, spread=0.7, seed=11)
    test, test_labels = blobs(8, 3, 10, spread=0.7, seed=12, centers_seed=11)
    kwargs = {"weight_decays": [1e-3, 1e-1, 10.0], "val_fraction": 0.25}
    first = linear_probe(train, train_labels, test, test_labels, seed=4, **kwargs)
    assert first == pytest.approx(linear_probe(train, train_labels, test, test_labels, seed=4, **kwargs), nan_ok=True)


def test_bad_inputs():
    train, labels = blobs(5, 3, 4, spread=2.0, seed=13)
    with pytest.raises(ValueError, match="train_features has 15 rows but train_labels has 14"):
        linear_probe(train, labels[:-1], train, labels)
    with pytest.raises(ValueError, match="test set is empty"):
        linear_probe(train, labels, train[:0], labels[:0])
    with pytest.raises(ValueError, match="train_labels must be non-negative, got minimum -1"):
        linear_probe(train, labels - 1, train, labels)
    with pytest.raises(ValueError, match="pass both val_features and val_labels"):
        linear_probe(train, labels, train, labels, val_features=train)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        linear_probe(train, labels, train[:, :3], labels)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        linear_probe(train, labels, train, labels, val_fraction=1.0)
    with pytest.raises(ValueError, match="weight decay must be a finite number >= 0, got -1.0"):
        linear_probe(train, labels, train, labels, weight_decays=[1e-2, -1.0])
    with pytest.raises(ValueError, match="weight_decays is empty"):
        linear_probe(train, labels, train, labels, weight_decays=[])
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        linear_probe(train, labels, train, labels, k_shot=0)
    with pytest.raises(ValueError, match="train_labels must be integers"):
        fit_linear_probe(train, labels.float(), 1e-2)
    with pytest.raises(ValueError, match="weight decay must be a finite number >= 0, got nan"):
        fit_linear_probe(train, labels, math.nan)
    with pytest.raises(ValueError, match="cannot hold out a validation split"):
        linear_probe(train[:1], labels[:1], train, labels)
