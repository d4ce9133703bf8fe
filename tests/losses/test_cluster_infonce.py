"""Cluster-guided InfoNCE against hand-written math, and its shared-space centroids."""

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.negatives import SharedSpaceCentroids


def feats(n=8, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return a, b, torch.tensor(5.0, dtype=torch.float64)


def infonce(a, b, s):
    return mmcl.create_loss("infonce")(a, b, s)


def test_with_every_policy_off_or_before_the_gate_it_is_infonce():
    a, b, s = feats()
    off = mmcl.create_loss("cluster_infonce", k=3, false_negatives="none")
    torch.testing.assert_close(off(a, b, s), infonce(a, b, s))
    assert off.centroids.started  # clusters exist, but no policy uses them
    gated = mmcl.create_loss("cluster_infonce", k=3, gate=-1.0)  # the gate never opens
    torch.testing.assert_close(gated(a, b, s), infonce(a, b, s))
    assert not gated.centroids.started


def test_masking_and_hard_weights_match_hand_written_math():
    a, b, s = feats()
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask", hard_negatives=1, hard_log_weight=0.7)
    # start the centroids on this batch, then freeze them (eval: no update) for the comparison
    loss_fn(a, b, s)
    loss_fn.eval()
    got = loss_fn(a, b, s)
    c = loss_fn.centroids
    ci, ct = c.assign(a), c.assign(b)
    near = c.neighbours(1)[:, 0]
    n = a.shape[0]
    eye = torch.eye(n, dtype=torch.bool)

    def direction(rows, cols, rid, cid):
        logits = s * rows @ cols.T
        for i in range(n):
            for j in range(n):
                if i != j and rid[i] == cid[j]:
                    logits[i, j] = float("-inf")
                elif i != j and near[rid[i]] == cid[j]:
                    logits[i, j] += 0.7
        return F.cross_entropy(logits, torch.arange(n))

    expected = (direction(a, b, ci, ct) + direction(b, a, ct, ci)) / 2
    torch.testing.assert_close(got, expected)
    assert (
        loss_fn.last_stats["masked_pairs"]
        == sum(1 for i in range(n) for j in range(n) if not eye[i, j] and ci[i] == ct[j]) / n
    )
    assert 0 <= loss_fn.last_stats["cluster_agreement"] <= 1


def test_centroid_column_is_the_second_nearest_centroid():
    a, b, s = feats()
    loss_fn = mmcl.create_loss(
        "cluster_infonce", k=3, false_negatives="none", centroid_columns=True, hard_log_weight=0.3
    )
    loss_fn(a, b, s)
    loss_fn.eval()
    got = loss_fn(a, b, s)
    cents = loss_fn.centroids.centroids.to(torch.float64)

    def direction(rows, cols):
        second = (rows @ cents.T).topk(2, dim=1).indices[:, 1]
        extra = s * (rows * cents[second]).sum(1, keepdim=True) + 0.3
        return F.cross_entropy(torch.cat([s * rows @ cols.T, extra], 1), torch.arange(rows.shape[0]))

    torch.testing.assert_close(got, (direction(a, b) + direction(b, a)) / 2)


def test_centroids_gate_init_and_momentum_update():
    c = SharedSpaceCentroids(k=2, momentum=0.5, gate=0.4)
    close = F.normalize(torch.ones(4, 3) + 0.01 * torch.arange(12.0).view(4, 3), dim=1)
    assert not c.observe(close[:2], close[2:])  # mean cosine ~1: the gate stays shut
    points = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0.9, 0.1]])
    points = F.normalize(points, dim=1)
    assert c.observe(points[:2], points[2:]) and c.centroids.shape == (2, 3)
    start = c.centroids.clone()
    batch = F.normalize(torch.tensor([[1.0, 0.2, 0.0]]), dim=1)  # only one cluster gets a point
    j = int(c.assign(batch))
    c.observe(batch, batch[:0])
    expected = F.normalize(0.5 * batch[0] + 0.5 * start[j], dim=0)
    torch.testing.assert_close(c.centroids[j], expected)
    torch.testing.assert_close(c.centroids[1 - j], start[1 - j])  # empty cluster unchanged
    fresh = SharedSpaceCentroids(k=2)
    fresh.load_state_dict(c.state_dict())
    assert fresh.started and torch.equal(fresh.centroids, c.centroids)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="'mask', 'margin' or 'none'"):
        mmcl.create_loss("cluster_infonce", false_negatives="drop")
    with pytest.raises(ValueError, match="k must be >= 2"):
        mmcl.create_loss("cluster_infonce", k=1)


def test_trains_through_a_recipe_and_resumes_with_its_centroids(tiny_corpus, tmp_path):
    from mmcl.recipe import recipe_from_dict

    from ..conftest import tiny_recipe_dict

    def run(**train):
        d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", **{"steps": 4, "checkpoint_every": 2, **train})
        d["eval"]["datasets"] = []
        d["loss"] = {
            "name": "cluster_infonce",
            "kwargs": {"k": 4, "false_negatives": "mask", "hard_negatives": 1, "hard_log_weight": 0.5},
        }
        t = mmcl.Trainer(recipe_from_dict(d))
        t.fit()
        return t

    first = run(stop_at_step=2)
    assert first.loss_fn.centroids.started
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-0000002" / "state.pt", weights_only=True)
    assert state["loss"]["centroids.centroids"].shape == (4, 16)
    resumed = run(resume="latest")
    assert resumed.step == 4
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "negatives/cluster_agreement" in logged


def test_periodic_mode_reclusters_the_bank_with_kmeans():
    from mmcl.negatives.bank import EmbeddingBank, spherical_kmeans

    bank = EmbeddingBank(size=6)
    bank.push(torch.eye(3)[[0, 1]], 0, torch.tensor([10, 11]))
    bank.push(torch.eye(3), 1, torch.tensor([20, 21, 22]))
    bank.push(torch.eye(3)[[2, 2]], 0, torch.tensor([30, 31]))  # wraps around: the oldest row goes
    feats, ids, modality = bank.contents()
    assert len(bank) == 6 and sorted(ids.tolist()) == [11, 20, 21, 22, 30, 31]
    assert modality.tolist().count(1) == 3
    fresh = EmbeddingBank(size=6)
    fresh.load_state_dict(bank.state_dict())
    assert torch.equal(fresh.contents()[0], feats)

    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.eye(4)[i] + 0.05 * torch.randn(20, 4, generator=g) for i in range(4)])
    blobs = F.normalize(blobs, dim=1)
    cents = spherical_kmeans(blobs, 4, seed=0)
    assert sorted((blobs @ cents.T).argmax(1).bincount().tolist()) == [20, 20, 20, 20]  # one blob each
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("faiss hidden for this test")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_faiss
    try:
        torch_cents = spherical_kmeans(blobs, 4, seed=0)  # the torch fallback
    finally:
        builtins.__import__ = real_import
    assert sorted((blobs @ torch_cents.T).argmax(1).bincount().tolist()) == [20, 20, 20, 20]

    c = SharedSpaceCentroids(k=4, mode="periodic", bank_size=80, recluster_every=2)
    mixed = blobs[torch.randperm(80, generator=g)]  # every batch holds all four blobs: the gate opens
    for step in range(4):
        part = mixed[step * 20 : (step + 1) * 20]
        c.observe(part[:10], part[10:])
    assert c.started and len(c.bank) == 80
    assert sorted(c.assign(blobs).bincount(minlength=4).tolist()) == [20, 20, 20, 20]


def test_periodic_cluster_loss_trains_and_gets_sample_ids(tiny_corpus, tmp_path):
    from mmcl.recipe import recipe_from_dict

    from ..conftest import tiny_recipe_dict

    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=3, checkpoint_every=100)
    d["eval"]["datasets"] = []
    d["loss"] = {
        "name": "cluster_infonce",
        "kwargs": {"k": 4, "false_negatives": "mask", "mode": "periodic", "bank_size": 64, "recluster_every": 1},
    }
    t = mmcl.Trainer(recipe_from_dict(d))
    t.fit()
    _, ids, _ = t.loss_fn.centroids.bank.contents()
    assert len(ids) == 48 and (ids >= 0).all() and set(ids.tolist()) <= set(range(48))


def test_calibrated_weighting_matches_hand_written_math_and_weights_are_normalised():
    from mmcl.negatives import pair_features

    a, b, s = feats(n=10)
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, false_negatives="none", weighting="calibrated")
    loss_fn(a, b, s)  # starts the centroids and takes one MLP step
    cal = loss_fn.calibrator
    assert int(cal.fit_steps) == 1
    prob = cal.probability(pair_features(a, b, a, b))  # before the next step's fit
    eye = torch.eye(10, dtype=torch.bool)
    w = (1 - prob).clamp(min=cal.min_weight).masked_fill(eye, 0)
    w = w * 9 / w.sum(1, keepdim=True)
    log_w = torch.where(eye, torch.zeros_like(w), w.log()).to(torch.float64)
    expected = (
        F.cross_entropy(s * a @ b.T + log_w, torch.arange(10)) + F.cross_entropy(s * b @ a.T + log_w, torch.arange(10))
    ) / 2
    loss_fn.eval()  # no fit in eval, so the weights stay those computed above
    torch.testing.assert_close(loss_fn(a, b, s), expected)
    got = cal.log_weights(prob, eye)
    assert torch.isfinite(got).all() and (got[eye] == 0).all()
    torch.testing.assert_close(got.exp().masked_fill(eye, 0).sum(1), torch.full((10,), 9.0))  # mean 1 per row
    assert (got.exp()[~eye] >= cal.min_weight * 0.5).all()


def test_calibrator_learns_its_own_signal_and_not_the_contrastive_loss():
    from mmcl.negatives import NegativeCalibrator

    g = torch.Generator().manual_seed(0)
    feats_ = torch.rand(2000, 4, generator=g) * 2 - 1
    target = (feats_[:, 2] + feats_[:, 3]) > 1.0  # "aligned" when both unimodal similarities are high
    cal = NegativeCalibrator(lr=1e-2)
    first = cal.fit(feats_, target)
    for _ in range(300):
        last = cal.fit(feats_, target)
    assert last < 0.5 * first
    acc = ((cal.probability(feats_) > 0.5) == target).float().mean()
    assert acc > 0.95

    # the contrastive loss sends no gradient into the MLP, and the weights are detached
    a, b, s = feats(n=10)
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, false_negatives="none", weighting="calibrated")
    loss_fn(a.detach(), b.detach(), s)
    loss_fn.eval()
    loss_fn(a, b, s).backward()
    assert all(p.grad is None for p in loss_fn.calibrator.parameters())
    # the gradient equals that of InfoNCE with the same (constant) log-weights
    with torch.no_grad():
        from mmcl.negatives import pair_features

        prob = loss_fn.calibrator.probability(pair_features(a, b, a, b))
        log_w = loss_fn.calibrator.log_weights(prob, torch.eye(10, dtype=torch.bool)).double()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ref = (
        F.cross_entropy(s * a2 @ b2.T + log_w, torch.arange(10))
        + F.cross_entropy(s * b2 @ a2.T + log_w, torch.arange(10))
    ) / 2
    ref.backward()
    torch.testing.assert_close(a.grad, a2.grad)


def test_calibrator_state_and_optimiser_survive_a_checkpoint_round_trip():
    a, b, s = feats(n=10)
    one = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask", weighting="calibrated")
    for _ in range(3):
        one(a, b, s)
    buffer = __import__("io").BytesIO()
    torch.save(one.state_dict(), buffer)
    buffer.seek(0)
    two = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask", weighting="calibrated")
    two.load_state_dict(torch.load(buffer, weights_only=True))
    assert int(two.calibrator.fit_steps) == 3 and two.calibrator.opt.state_dict()["state"]
    torch.testing.assert_close(two(a, b, s), one(a, b, s))  # same weights, then the same Adam step
    for p, q in zip(one.calibrator.parameters(), two.calibrator.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="'none' or 'calibrated'"):
        mmcl.create_loss("cluster_infonce", weighting="soft")


def test_spherical_kmeans_inertia_is_within_one_percent_of_scikit_learn():
    from sklearn.cluster import KMeans

    from mmcl.negatives.bank import spherical_kmeans

    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    points = F.normalize(centres.repeat_interleave(50, 0) + 0.15 * torch.randn(300, 8, generator=g), dim=1)

    def inertia(x, c):
        return float(((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).values.sum())

    ours = spherical_kmeans(points, 6, seed=0)
    # on the unit sphere, the inertia of the assignment with the (re-normalised) cluster means
    assign = (points @ ours.T).argmax(1)
    means = torch.stack([points[assign == j].mean(0) for j in range(6)])
    km = KMeans(6, n_init=5, random_state=0).fit(points.numpy())
    assert inertia(points, means) <= 1.01 * km.inertia_


def test_margin_masks_and_adds_the_bidirectional_margin_loss():
    a, b, s = feats(n=10)
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, false_negatives="margin", margin_weight=0.5, margin_beta=0.2)
    loss_fn(a, b, s)
    loss_fn.eval()
    got = loss_fn(a, b, s)
    masked = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask")
    masked.load_state_dict(loss_fn.state_dict())
    masked.eval()
    c = loss_fn.centroids
    ci, ct = c.assign(a), c.assign(b)
    terms = []
    for x, y, rid, cid in ((a, b, ci, ct), (b, a, ct, ci)):
        for i in range(10):
            for j in range(10):
                if i != j and rid[i] == cid[j]:
                    d = x[i] @ y[j] - x[i] @ y[i]
                    terms.append(torch.relu(d) + torch.relu(-d - 0.2))
    assert terms, "the toy batch must have same-cluster pairs"
    torch.testing.assert_close(got, masked(a, b, s) + 0.5 * torch.stack(terms).mean())
    assert loss_fn.last_stats["margin_pairs"] == len(terms)


@pytest.mark.parametrize("signal", ["clusters", "text_similarity", "image_similarity"])
def test_calibration_targets_follow_the_chosen_signal(signal):
    from mmcl.negatives import NegativeCalibrator, pair_features

    a, b, _ = feats(n=6)
    b = b.clone()
    b[1] = b[0]  # captions 0 and 1 are duplicates
    cal = NegativeCalibrator(signal=signal, similarity_threshold=0.99)
    ids_img, ids_txt = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 1, 2, 2, 2])
    t = cal.targets(pair_features(a, b, a, b), ids_img, ids_txt)
    if signal == "clusters":  # same cluster in both modalities
        assert t[0, 1] and t[1, 0] and not t[2, 3] and t[4, 5] and not t[0, 2]
    elif signal == "text_similarity":
        assert t[0, 1] and t[1, 0] and not t[0, 2] and t.diagonal().all()
    else:
        assert not t[0, 1] and t.diagonal().all()
    with pytest.raises(ValueError, match="calibration signal must be one of"):
        NegativeCalibrator(signal="labels")


def test_caption_keys_match_after_normalisation_only():
    from mmcl.negatives.duplicates import caption_keys, normalise_caption

    assert normalise_caption("  A red STAR.") == "a red star"
    keys = caption_keys(["a red star.", "A red  star", "a red star left of a blue circle", "a blue star"])
    assert keys[0] == keys[1]
    assert len(set(keys[1:].tolist())) == 3
    assert keys.dtype == torch.long
    # the same key in another process: a fixed hash, not Python's salted one
    assert int(caption_keys(["a red star"])[0]) == -1334348713213267625


def test_duplicate_captions_are_masked_both_ways_from_the_first_step():
    a, b, s = feats()
    keys = torch.tensor([5, 1, 5, 2, 3, 1, 5, 4])
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, gate=-1.0, duplicate_captions="mask")  # no clusters
    loss_fn.batch_caption_keys = keys
    got = loss_fn(a, b, s)
    assert not loss_fn.centroids.started
    assert loss_fn.batch_caption_keys is None  # one batch's keys are used once
    n = a.shape[0]
    mask = (keys[:, None] == keys[None, :]) & ~torch.eye(n, dtype=torch.bool)
    li = (s * a @ b.T).masked_fill(mask, float("-inf"))
    lt = (s * b @ a.T).masked_fill(mask, float("-inf"))
    expected = (F.cross_entropy(li, torch.arange(n)) + F.cross_entropy(lt, torch.arange(n))) / 2
    torch.testing.assert_close(got, expected)
    # all keys distinct: plain InfoNCE; the positive is never masked even when every key is equal
    loss_fn.batch_caption_keys = torch.arange(n)
    torch.testing.assert_close(loss_fn(a, b, s), infonce(a, b, s))
    loss_fn.batch_caption_keys = torch.zeros(n, dtype=torch.long)
    assert torch.isfinite(loss_fn(a, b, s))
    with pytest.raises(ValueError, match="batch_caption_keys"):
        loss_fn(a, b, s)  # keys not set for this call
    with pytest.raises(ValueError, match="'mask', 'positive' or 'none'"):
        mmcl.create_loss("cluster_infonce", duplicate_captions="drop")


def test_duplicate_captions_as_positives_match_a_multi_positive_target():
    a, b, s = feats()
    keys = torch.tensor([5, 1, 5, 2, 3, 1, 5, 4])
    loss_fn = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask", duplicate_captions="positive")
    loss_fn.batch_caption_keys = keys
    loss_fn(a, b, s)  # start the clusters, so the mask is on too (and must spare the duplicates)
    loss_fn.eval()
    loss_fn.batch_caption_keys = keys
    got = loss_fn(a, b, s)
    c = loss_fn.centroids
    ci, ct = c.assign(a), c.assign(b)
    n = a.shape[0]
    same_caption = keys[:, None] == keys[None, :]

    def direction(rows, cols, rid, cid):
        logits = s * rows @ cols.T
        total = 0.0
        for i in range(n):
            keep = [j for j in range(n) if same_caption[i, j] or rid[i] != cid[j]]
            logp = logits[i, keep].log_softmax(0)
            pos = [k for k, j in enumerate(keep) if same_caption[i, j]]
            total = total - logp[pos].mean()
        return total / n

    expected = (direction(a, b, ci, ct) + direction(b, a, ct, ci)) / 2
    torch.testing.assert_close(got, expected)
    loss_fn.batch_caption_keys = torch.arange(n)  # no duplicates: the masked loss alone
    plain = mmcl.create_loss("cluster_infonce", k=3, false_negatives="mask")
    plain.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(loss_fn(a, b, s), plain.eval()(a, b, s))


def test_duplicate_masking_trains_through_a_recipe(tiny_corpus, tmp_path):
    import csv

    from mmcl.errors import ConfigError
    from mmcl.recipe import recipe_from_dict

    from ..conftest import tiny_recipe_dict

    with open(tiny_corpus / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):  # three captions, each shared by a third of the corpus
        r["filepath"] = str(tiny_corpus / r["filepath"])
        r["title"] = ["a red circle", "A red circle.", "a small red circle", "a green star"][i % 4]
    path = tmp_path / "short.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=2)
    d["data"]["train"] = str(path)
    d["eval"]["datasets"] = []
    d["loss"] = {"name": "cluster_infonce", "kwargs": {"k": 4, "duplicate_captions": "mask"}}
    t = mmcl.Trainer(recipe_from_dict(d))
    t.fit()
    # batches of 8 over 3 distinct captions: every row has duplicates
    equal = t.loss_fn.last_stats["duplicate_pairs"]
    assert equal >= 8 / 3 - 1
    assert "negatives/duplicate_pairs" in (tmp_path / "run" / "metrics.jsonl").read_text()
    # the same batches with containment: "a red circle" within "a small red circle" adds pairs
    d["loss"]["kwargs"]["caption_match"] = "contained"
    d["train"]["output_dir"] = str(tmp_path / "run-contained")
    t = mmcl.Trainer(recipe_from_dict(d))
    t.fit()
    assert t.loss_fn.last_stats["duplicate_pairs"] > equal
    d["model"] = {"kind": "image_image", "vision": d["model"]["vision"], "embed_dim": 16}
    d["data"]["augment"] = {"preset": "simclr"}
    with pytest.raises(ConfigError, match="duplicate_captions"):
        mmcl.Trainer(recipe_from_dict(d))


def test_contained_matches_a_brute_force_ordered_subsequence_check():
    import random

    from mmcl.negatives import caption_words, contained

    rng = random.Random(0)
    texts = [" ".join(rng.choice("a b c d") for _ in range(rng.randint(0, 6))) for _ in range(120)]
    texts += ["A red circle.", "a small red circle at the top", "circle red", "a b c d a b c d a"]
    words = [t.lower().replace(".", "").split() for t in texts]

    def inside(hay, needle):  # needle's words, in order, within hay
        it = iter(hay)
        return bool(needle) and max(len(hay), len(needle)) <= 8 and all(w in it for w in needle)

    expected = torch.tensor([[inside(h, nd) for nd in words] for h in words])
    got = contained(caption_words(texts, max_words=8), caption_words(texts, max_words=8))
    assert torch.equal(got, expected)
    assert got[-3, -4] and not got[-4, -3] and not got[-2, -4]  # one way only, and in order
    assert not got[:, -1].any() and not got[-1].any()  # longer than max_words: compared with nothing


def contained_loss(mode):
    """(the loss of a batch of 8 whose captions contain one another, its features, words, and the
    [i, j] matrix: caption j within caption i)."""
    from mmcl.negatives import contained

    a, b, s = feats()
    # captions: 0 "red circle", 1 "small red circle", 2 "blue square", 3 "red circle" again, ...
    words = torch.tensor([[1, 2, 0], [3, 1, 2], [4, 5, 0], [1, 2, 0], [6, 0, 0], [3, 1, 2], [7, 0, 0], [8, 0, 0]])
    loss_fn = mmcl.create_loss("cluster_infonce", gate=-1.0, duplicate_captions=mode, caption_match="contained")
    loss_fn.batch_caption_words = words
    return loss_fn, loss_fn(a, b, s), (a, b, s), contained(words, words)


def test_contained_captions_mask_each_direction_with_its_own_pairs():
    loss_fn, got, (a, b, s), within = contained_loss("mask")
    n = a.shape[0]
    inside = within & ~torch.eye(n, dtype=torch.bool)
    assert inside[1, 0] and not inside[0, 1] and inside[0, 3] and inside[3, 0]
    li = (s * a @ b.T).masked_fill(inside, float("-inf"))  # image i: caption j within caption i
    lt = (s * b @ a.T).masked_fill(inside.T, float("-inf"))  # caption j: image i whose caption holds j
    expected = (F.cross_entropy(li, torch.arange(n)) + F.cross_entropy(lt, torch.arange(n))) / 2
    torch.testing.assert_close(got, expected)
    assert loss_fn.last_stats["duplicate_pairs"] == pytest.approx(float(inside.sum()) / n)
    with pytest.raises(ValueError, match="batch_caption_words"):
        loss_fn(a, b, s)
    loss_fn.batch_caption_words = torch.arange(n)  # keys, not words
    with pytest.raises(ValueError, match=r"\(batch, words\)"):
        loss_fn(a, b, s)
    with pytest.raises(ValueError, match="'equal' or 'contained'"):
        mmcl.create_loss("cluster_infonce", caption_match="subset")


def test_contained_captions_as_positives_match_a_multi_positive_target():
    _, got, (a, b, s), within = contained_loss("positive")
    n = a.shape[0]
    pos = within | torch.eye(n, dtype=torch.bool)

    def direction(logits, positives):
        return -torch.stack([logits[i].log_softmax(0)[positives[i]].mean() for i in range(n)]).mean()

    expected = (direction(s * a @ b.T, pos) + direction(s * b @ a.T, pos.T)) / 2
    torch.testing.assert_close(got, expected)
