"""Fine-tuning transfer: stratified subsets, learning a toy problem, isolation, determinism, edge cases."""

import math

import pytest
import torch
from torch import nn

from mmcl.eval.finetune import _augment, _batches, _translate, finetune_classifier, finetune_transfer, subset_per_class

NUM_CLASSES = 3
FEATURES = 8


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(features=FEATURES):
    """Conv + BatchNorm + ReLU + global average pool: (B, 3, H, W) -> (B, features), default init."""
    return nn.Sequential(
        nn.Conv2d(3, features, 3, padding=1),
        nn.BatchNorm2d(features),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def tiny_backbone(seed=0):
    """``tiny_net`` initialised from ``seed``, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tiny_net()


def same(a, b):
    """Equal metric dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def colour_images(per_class, seed, size=8, noise=0.5):
    """Class c: channel c is brighter than the others, plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    x = noise * torch.randn(y.numel(), 3, size, size, generator=gen)
    x[torch.arange(y.numel()), y] += 1.0
    return x, y


def test_subset_per_class_is_stratified_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [-1] * 40)[
        torch.randperm(123, generator=torch.Generator().manual_seed(0))
    ]
    idx = subset_per_class(labels, 0.1, seed=3)
    assert torch.equal(idx, idx.sort().values) and idx.dtype == torch.long
    assert idx.unique().numel() == idx.numel()
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts == [5, 3, 1]  # round(0.1 * n_c), at least one
    assert (labels[idx] >= 0).all()
    assert torch.equal(subset_per_class(labels, 0.1, seed=3), idx)
    assert not torch.equal(subset_per_class(labels, 0.1, seed=4), idx)
    assert torch.bincount(labels[subset_per_class(labels, 0.001)], minlength=3).tolist() == [1, 1, 1]
    assert torch.equal(subset_per_class(labels, 1.0), torch.nonzero(labels >= 0).flatten())


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), True])
def test_subset_per_class_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        subset_per_class(torch.tensor([0, 1]), fraction)


def test_subset_per_class_needs_a_labelled_item():
    with pytest.raises(ValueError, match="no labelled item"):
        subset_per_class(torch.tensor([-1, -1]), 0.5)


def test_batches_never_hold_one_item():
    gen = torch.Generator().manual_seed(0)
    for n, bs in [(1, 64), (2, 64), (5, 2), (9, 4), (8, 4), (3, 3)]:
        batches = _batches(n, bs, gen)
        assert len(batches) == math.ceil(n / bs)
        assert all(b.numel() >= 2 for b in batches)
        assert set(torch.cat(batches).tolist()) == set(range(n))


def test_augment_is_a_flipped_translated_window():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert torch.equal(_translate(x, torch.tensor([[4, 4], [4, 4]]), 4), x)  # centred crop: identity
    shifted = _translate(x, torch.tensor([[4, 5], [3, 4]]), 4)
    assert torch.equal(shifted[0, :, :, :-1], x[0, :, :, 1:])  # one column to the left
    assert torch.equal(shifted[1, :, 1:], x[1, :, :-1])  # one row down
    a = _augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    assert torch.equal(a, _augment(x, torch.Generator().manual_seed(1)))
    # Every output value comes from its own image and channel.
    for i in range(2):
        for c in range(3):
            assert set(a[i, c].flatten().tolist()) <= set(x[i, c].flatten().tolist())
    assert _augment(torch.zeros(3, 3, 1, 1), torch.Generator()).shape == (3, 3, 1, 1)  # too small to translate


def test_finetune_classifier_learns_a_separable_problem_and_leaves_backbone_alone():
    x_tr, y_tr = colour_images(12, seed=0)
    x_te, y_te = colour_images(10, seed=1)
    backbone = tiny_backbone().eval()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rng_before = torch.get_rng_state()
    out = finetune_classifier(
        backbone, FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, epochs=10, batch_size=16, lr=1e-2
    )
    assert out["acc1"] > 0.9  # chance is 1/3
    assert 0 <= out["mean_per_class_recall"] <= 1 and math.isnan(out["acc5"])  # fewer than 5 classes
    assert out["num_train"] == 36 and out["epochs"] == 10
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not backbone.training and all(p.requires_grad for p in backbone.parameters())
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is forked, not consumed


def test_finetune_classifier_is_deterministic_and_trains_frozen_parameters():
    x_tr, y_tr = colour_images(6, seed=2, noise=2.0)  # noisy: accuracy well inside (0, 1)
    x_te, y_te = colour_images(10, seed=3, noise=2.0)
    kwargs = dict(epochs=3, batch_size=8, lr=1e-2)
    first = finetune_classifier(tiny_backbone(), FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, seed=1, **kwargs)
    torch.manual_seed(123)  # the global random state must not matter
    again = finetune_classifier(tiny_backbone(), FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, seed=1, **kwargs)
    # The copy trains every parameter, whatever the caller's requires_grad flags.
    frozen = tiny_backbone().requires_grad_(False)
    from_frozen = finetune_classifier(frozen, FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, seed=1, **kwargs)
    assert 0.4 < first["acc1"] < 0.95
    assert same(first, again) and same(first, from_frozen)
    other = finetune_classifier(tiny_backbone(), FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, seed=2, **kwargs)
    assert not same(first, other)  # the seed matters


def test_finetune_classifier_tiny_training_sets():
    def pooled_bn():  # BatchNorm1d on pooled features fails on one-item batches in train mode
        return nn.Sequential(tiny_backbone(), nn.BatchNorm1d(FEATURES))

    x_te, y_te = colour_images(4, seed=5)
    x_tr, y_tr = colour_images(1, seed=4)  # one item per class, far fewer than batch_size
    out = finetune_classifier(pooled_bn(), FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, epochs=2)
    assert out["num_train"] == 3 and 0 <= out["acc1"] <= 1
    # A single training item, and a last batch of one item: BatchNorm never sees a one-item batch.
    one = finetune_classifier(pooled_bn(), FEATURES, 4, x_tr[:1], y_tr[:1], x_te, y_te, epochs=2)
    assert one["num_train"] == 1 and 0 <= one["acc1"] <= 1
    odd = finetune_classifier(pooled_bn(), FEATURES, NUM_CLASSES, x_tr, y_tr, x_te, y_te, epochs=1, batch_size=2)
    assert odd["num_train"] == 3


def test_finetune_classifier_argument_checks():
    x, y = colour_images(2, seed=0)
    bb = tiny_backbone()
    with pytest.raises(ValueError, match="num_classes=2 but y_train contains class 2"):
        finetune_classifier(bb, FEATURES, 2, x, y, x, y)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        finetune_classifier(bb, FEATURES, 3, x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        finetune_classifier(bb, FEATURES, 3, x, y, x, y, lr=0.0)
    with pytest.raises(ValueError, match="4-D"):
        finetune_classifier(bb, FEATURES, 3, x[:, 0], y, x, y)
    with pytest.raises(ValueError, match="x_test has 6 images but y_test has 5 labels"):
        finetune_classifier(bb, FEATURES, 3, x, y, x, y[:5])


def test_finetune_transfer_keys_gain_and_subsets():
    x_tr, y_tr = colour_images(30, seed=6)
    y_tr[::7] = -1  # unlabelled items are never drawn
    x_te, y_te = colour_images(4, seed=7)
    y_te[0] = -1  # dropped from the test set
    kwargs = dict(epochs=2, batch_size=8, lr=1e-2, seed=1)
    out = finetune_transfer(tiny_backbone(0), tiny_net, FEATURES, x_tr, y_tr, x_te, y_te, **kwargs)
    assert out["num_test"] == 11
    for prefix, fraction in (("1%", 0.01), ("10%", 0.1)):
        assert out[f"{prefix}/num_train"] == subset_per_class(y_tr, fraction, seed=1).numel()
        for metric in ("acc1", "acc5", "mean_per_class_recall"):
            pre, scr, gain = (out[f"{prefix}/{kind}_{metric}"] for kind in ("pretrained", "scratch", "gain"))
            if metric == "acc5":
                assert math.isnan(pre) and math.isnan(scr) and math.isnan(gain)
            else:
                assert gain == pytest.approx(pre - scr)
    assert out["1%/num_train"] == 3
    assert set(out) == {"num_test"} | {
        f"{p}/{k}"
        for p in ("1%", "10%")
        for k in ["num_train"]
        + [
            f"{kind}_{m}"
            for kind in ("pretrained", "scratch", "gain")
            for m in ("acc1", "acc5", "mean_per_class_recall")
        ]
    }
    # The pretrained column is finetune_classifier on the given backbone and the same subset.
    idx = subset_per_class(y_tr, 0.1, seed=1)
    keep = y_te >= 0
    direct = finetune_classifier(tiny_backbone(0), FEATURES, 3, x_tr[idx], y_tr[idx], x_te[keep], y_te[keep], **kwargs)
    assert out["10%/pretrained_acc1"] == direct["acc1"]
    assert out["10%/pretrained_mean_per_class_recall"] == direct["mean_per_class_recall"]
    # The scratch initialisation is seeded: same seed, same metrics, whatever the global random state.
    torch.manual_seed(5)
    again = finetune_transfer(tiny_backbone(0), tiny_net, FEATURES, x_tr, y_tr, x_te, y_te, **kwargs)
    assert same(again, out)


class ChannelMeans(nn.Module):
    """1x1 conv + BatchNorm + ReLU + global pool. ``pretrained=True`` sets the conv to read the channel
    colours (features already separate the colour classes); the scratch initialisation is all zeros,
    whose features carry no signal and, through ReLU at 0, receive no gradient either."""

    def __init__(self, pretrained: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.weight.zero_()
            if pretrained:
                self.conv.weight[:, :, 0, 0] = torch.cat([torch.eye(3), -torch.eye(3)])

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def test_pretrained_backbone_is_used_and_beats_scratch():
    x_tr, y_tr = colour_images(20, seed=8)
    x_te, y_te = colour_images(10, seed=9)
    out = finetune_transfer(
        ChannelMeans(pretrained=True),
        lambda: ChannelMeans(pretrained=False),
        6,
        x_tr,
        y_tr,
        x_te,
        y_te,
        fractions=(0.05,),
        epochs=20,
        lr=1e-2,
    )
    assert out["5%/num_train"] == 3
    assert out["5%/pretrained_acc1"] > 0.9
    assert out["5%/scratch_acc1"] == pytest.approx(1 / 3)  # one class for everything
    assert out["5%/gain_acc1"] > 0.5


def test_finetune_transfer_argument_checks():
    x, y = colour_images(2, seed=0)
    with pytest.raises(ValueError, match="fractions must be distinct"):
        finetune_transfer(tiny_backbone(), tiny_backbone, FEATURES, x, y, x, y, fractions=(0.1, 0.1))
    with pytest.raises(ValueError, match="fraction must be a number in"):
        finetune_transfer(tiny_backbone(), tiny_backbone, FEATURES, x, y, x, y, fractions=(10,))
    with pytest.raises(ValueError, match="test set has no labelled item"):
        finetune_transfer(tiny_backbone(), tiny_backbone, FEATURES, x, y, x, torch.full_like(y, -1))
