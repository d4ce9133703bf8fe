"""Weighted kNN: parity with lightly's knn_predict, a hand-computed case, chunking and argument checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmcl.eval.knn import knn_classify, knn_metrics


def random_unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def random_problem(seed, n_train=60, n_test=25, dim=8, num_classes=5):
    train = random_unit(n_train, dim, seed)
    test = random_unit(n_test, dim, seed + 100)
    labels = torch.randint(num_classes, (n_train,), generator=torch.Generator().manual_seed(seed + 200))
    return train, labels, test


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 7, 60])
def test_class_order_matches_lightly_knn_predict(seed, k):
    from lightly.utils.benchmarking import knn_predict

    train, labels, test = random_problem(seed)
    theirs = knn_predict(test, train.T, labels, num_classes=5, knn_k=k, knn_t=0.1)
    scores = knn_classify(train, labels, test, k=k, temperature=0.1, num_classes=5)
    ours = scores.argsort(dim=1, descending=True)
    assert torch.equal(ours[:, 0], theirs[:, 0])
    # Classes with no neighbour all score 0, so their relative order is arbitrary: compare the scored prefix.
    for row in range(test.shape[0]):
        n_scored = int((scores[row] > 0).sum())
        assert torch.equal(ours[row, :n_scored], theirs[row, :n_scored])
    if k == train.shape[0]:  # every class has neighbours: the whole order must agree
        assert (scores > 0).all()
        assert torch.equal(ours, theirs)


def test_hand_computed_scores():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])  # similarities 1.0, 0.0, 0.6
    # k=2: neighbours are item 0 (class 0, sim 1.0) and item 2 (class 1, sim 0.6)
    scores = knn_classify(train, labels, test, k=2, temperature=1.0)
    assert torch.allclose(scores, torch.tensor([[math.exp(1.0), math.exp(0.6)]]))
    assert scores.argmax().item() == 0
    # k=3 adds item 1 (class 1, sim 0): e^0 + e^0.6 = 2.82 > e^1 = 2.72, so the vote flips to class 1
    scores = knn_classify(train, labels, test, k=3, temperature=1.0)
    assert torch.allclose(scores, torch.tensor([[math.exp(1.0), 1.0 + math.exp(0.6)]]))
    assert scores.argmax().item() == 1
    # a lower temperature sharpens the weights towards the nearest item: class 0 again
    scores = knn_classify(train, labels, test, k=3, temperature=0.5)
    assert torch.allclose(scores, torch.tensor([[math.exp(2.0), 1.0 + math.exp(1.2)]]))
    assert scores.argmax().item() == 0


def test_chunked_equals_unchunked():
    train, labels, test = random_problem(3, n_test=23)
    full = knn_classify(train, labels, test, k=9, temperature=0.07, chunk_size=1024)
    for chunk_size in (1, 5, 23):
        assert torch.allclose(knn_classify(train, labels, test, k=9, temperature=0.07, chunk_size=chunk_size), full)


def test_k_above_bank_size_uses_whole_bank():
    train, labels, test = random_problem(4, n_train=6)
    assert torch.equal(knn_classify(train, labels, test, k=50), knn_classify(train, labels, test, k=6))
    assert knn_metrics(train, labels, test, torch.zeros(test.shape[0], dtype=torch.long), k=50)["k"] == 6


def test_num_classes_and_empty_test():
    train, labels, test = random_problem(5, num_classes=3)
    assert knn_classify(train, labels, test, num_classes=7).shape == (test.shape[0], 7)
    assert knn_classify(train, labels, test[:0]).shape == (0, int(labels.max()) + 1)


def test_metrics_on_clustered_features():
    gen = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(6, 16, generator=gen), dim=-1)
    train_labels, test_labels = torch.arange(6).repeat(10), torch.arange(6).repeat(4)
    train = F.normalize(centers[train_labels] + 0.05 * torch.randn(60, 16, generator=gen), dim=-1)
    test = F.normalize(centers[test_labels] + 0.05 * torch.randn(24, 16, generator=gen), dim=-1)
    out = knn_metrics(train, train_labels, test, test_labels, k=5, temperature=0.1)
    assert out["acc1"] == 1.0 and out["acc5"] == 1.0 and out["mean_per_class_recall"] == 1.0
    assert out["k"] == 5 and out["temperature"] == 0.1
    # fewer than 5 classes: acc5 is NaN, as in CLIP_benchmark
    keep_train, keep_test = train_labels < 3, test_labels < 3
    out = knn_metrics(train[keep_train], train_labels[keep_train], test[keep_test], test_labels[keep_test], k=5)
    assert math.isnan(out["acc5"]) and out["acc1"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": 2.5}, "k must be an integer >= 1, got 2.5"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": -0.1}, "temperature must be a finite number > 0, got -0.1"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        ({"num_classes": 2}, "num_classes=2 but train_labels contains class 4"),
    ],
)
def test_bad_arguments(kwargs, match):
    train, labels, test = random_problem(6)
    labels[0] = 4
    with pytest.raises(ValueError, match=match):
        knn_classify(train, labels, test, **kwargs)


def test_bad_shapes_and_labels():
    train, labels, test = random_problem(7)
    with pytest.raises(ValueError, match="train_features has 60 rows but train_labels has 59"):
        knn_classify(train, labels[:-1], test)
    with pytest.raises(ValueError, match=r"test_features must be \(N_test, 8\)"):
        knn_classify(train, labels, test[:, :4])
    with pytest.raises(ValueError, match="train set is empty"):
        knn_classify(train[:0], labels[:0], test)
    with pytest.raises(ValueError, match="train_labels must be non-negative, got minimum -1"):
        knn_classify(train, torch.cat([labels[:-1], torch.tensor([-1])]), test)
    with pytest.raises(ValueError, match="test_features has 25 rows but test_labels has 3"):
        knn_metrics(train, labels, test, labels[:3])
    with pytest.raises(ValueError, match="test set is empty"):
        knn_metrics(train, labels, test[:0], labels[:0])
