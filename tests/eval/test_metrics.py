"""Metric parity with CLIP_benchmark: its own evaluate() functions run on the same embeddings."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmcl.eval.metrics import attribute_recall_at_1, classification_metrics, duplicate_fraction, retrieval_metrics
from mmcl.eval.zero_shot import zero_shot_classifier, zero_shot_metrics


class TableModel:
    """A 'model' whose inputs are row indices into fixed embedding tables, so CLIP_benchmark's code
    path and mmcl's see exactly the same features."""

    def __init__(self, image_table, text_table):
        self.image_table, self.text_table = image_table, text_table

    def encode_image(self, x):
        return self.image_table[x.long().flatten()]

    def encode_text(self, ids):
        return self.text_table[ids.long().flatten()]


class TableTokenizer:
    def __init__(self, vocab):
        self.index = {t: i for i, t in enumerate(vocab)}

    def __call__(self, texts):
        return torch.tensor([self.index[t] for t in texts])


def random_unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_matches_clip_benchmark_with_uneven_captions(seed):
    from clip_benchmark.metrics import zeroshot_retrieval

    n_img, d = 40, 8
    g = torch.Generator().manual_seed(seed)
    captions_per_image = torch.randint(1, 5, (n_img,), generator=g).tolist()
    text_to_image = torch.tensor([i for i, c in enumerate(captions_per_image) for _ in range(c)])
    img = random_unit(n_img, d, seed)
    # Captions near their image, so recall is neither 0 nor 1.
    txt = F.normalize(img[text_to_image] + 0.9 * torch.randn(len(text_to_image), d, generator=g), dim=-1)

    captions = [f"t{i}" for i in range(len(text_to_image))]
    items, start = [], 0
    for i, c in enumerate(captions_per_image):
        items.append((torch.tensor([float(i)]), captions[start : start + c]))
        start += c
    loader = torch.utils.data.DataLoader(
        items, batch_size=7, collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])
    )
    theirs = zeroshot_retrieval.evaluate(
        TableModel(img, txt), loader, TableTokenizer(captions), "cpu", amp=False, recall_k_list=[1, 5, 10]
    )
    ours = retrieval_metrics(img, txt, text_to_image, ks=(1, 5, 10), chunk_size=9)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < ours["image_retrieval_recall@1"] < 1


def test_retrieval_ranks_by_hand():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 0.2, 0.9], [0, 1.0, 0], [0.1, 0, 0.9]])
    t2i = torch.tensor([0, 1, 1, 2])
    m = retrieval_metrics(img, txt, t2i, ks=(1, 2))
    # captions: 0 -> rank 1; 1 -> image 1 is 2nd (image 2 scores 0.9); 2 -> rank 1; 3 -> rank 1
    assert m["image_retrieval_recall@1"] == 0.75 and m["image_retrieval_recall@2"] == 1.0
    assert m["image_retrieval_mean_rank"] == pytest.approx(1.25) and m["image_retrieval_median_rank"] == 1
    # images: 0 -> caption 0 first; 1 -> caption 2 first; 2 -> caption 1 (0.9) ties its caption 3 (0.9).
    # CLIP_benchmark's torch.topk puts caption 1 first, so image 2 misses at k=1, as here; ties in the
    # query's favour (the optimistic figure, mmcl's recall@1 until it matched CLIP_benchmark's) hit.
    assert torch.topk(txt @ img[2], 1).indices.tolist() == [1]
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3) and m["text_retrieval_recall@2"] == 1.0
    assert "text_retrieval_recall_optimistic@1" not in m  # only when asked
    # the mean rank breaks ties at random: image 2's caption is 1st or 2nd, 1.5 on average
    assert m["text_retrieval_mean_rank"] == pytest.approx((1 + 1 + 1.5) / 3)
    o = retrieval_metrics(img, txt, t2i, ks=(1, 2), optimistic=True)
    assert o["text_retrieval_recall_optimistic@1"] == 1.0 and o["text_retrieval_mean_rank_optimistic"] == 1.0
    assert o["image_retrieval_recall_optimistic@1"] == 0.75 == o["image_retrieval_recall@1"]  # no ties there


def test_zero_shot_matches_clip_benchmark(monkeypatch):
    import builtins

    import numpy as np
    from clip_benchmark.metrics import zeroshot_classification

    # clip-benchmark 1.6.2's accuracy() calls float() on a 1-element array, which NumPy >= 2.4
    # refuses; give its module a float() that accepts that, leaving its arithmetic untouched.
    monkeypatch.setattr(
        zeroshot_classification, "float", lambda v: builtins.float(np.asarray(v).reshape(())), raising=False
    )

    n_cls, n_tpl, d, n = 7, 3, 6, 60
    classnames = [f"class{i}" for i in range(n_cls)]
    templates = ["a {c}.", "a photo of a {c}.", "{c}!"]
    prompts = [t.format(c=c) for c in classnames for t in templates]
    text_table = random_unit(len(prompts), d, 3)
    targets = torch.randint(0, n_cls, (n,), generator=torch.Generator().manual_seed(4))
    class_mean = F.normalize(text_table.view(n_cls, n_tpl, d).mean(1), dim=-1)
    img = F.normalize(class_mean[targets] + 1.5 * random_unit(n, d, 5), dim=-1)

    class Dataset(list):
        classes = classnames  # CLIP_benchmark reads the class list from the dataset

    dataset = Dataset((torch.tensor([float(i)]), int(targets[i])) for i in range(n))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    model, tok = TableModel(img, text_table), TableTokenizer(prompts)
    theirs = zeroshot_classification.evaluate(model, loader, tok, classnames, templates, "cpu", amp=False)

    class Adapter:
        def encode_text(self, texts):
            return F.normalize(model.encode_text(tok(texts)), dim=-1)

    classifier = zero_shot_classifier(Adapter(), classnames, templates)
    ours = zero_shot_metrics(img, targets, classifier)
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
    assert 0 < ours["acc1"] < 1


def test_classification_edge_cases():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    m = classification_metrics(logits, torch.tensor([1, 2]))
    assert m["acc1"] == 0.5 and math.isnan(m["acc5"])  # fewer than 5 classes, as CLIP_benchmark
    with pytest.raises(ValueError, match="no labelled items"):
        zero_shot_metrics(torch.zeros(2, 3), torch.tensor([-1, -1]), torch.zeros(3, 4))


def test_attribute_recall_and_duplicates():
    img = torch.eye(3)
    txt = torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # captions 0 and 1 swapped
    keys = ["a", "a", "b"]
    m = attribute_recall_at_1(img, txt, keys, keys)
    assert m["image_retrieval_attribute_recall@1"] == 1.0  # a wrong image with the same key counts
    assert duplicate_fraction(keys) == pytest.approx(2 / 3)


def _brute_force_ranks(img, txt, t2i):
    """Optimistic ranks from the whole score matrix in float64, ties going to the query."""
    scores = txt.double() @ img.double().T
    own = torch.zeros_like(scores, dtype=torch.bool)
    own[torch.arange(len(t2i)), t2i] = True
    pos = scores[own]
    t2i_rank = (scores > pos[:, None] + 1e-9).sum(1)
    best = torch.where(own, scores, -float("inf")).max(0).values
    i2t_rank = (scores > best[None] + 1e-9).sum(0)
    return t2i_rank, i2t_rank


@pytest.mark.parametrize("text_chunk,image_chunk", [(1, 1), (7, 5), (64, 3), (1000, 1000)])
def test_streamed_ranks_equal_the_full_matrix_for_any_tiling(text_chunk, image_chunk):
    from mmcl.eval.metrics import retrieval_ranks

    g = torch.Generator().manual_seed(7)
    n_img, d = 37, 6
    t2i = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (50,), generator=g)])
    # Small integer features: scores are exact in float32, with many exact ties, which go to the
    # query in both directions in retrieval_ranks (the optimistic ranks).
    img = torch.randint(-3, 4, (n_img, d), generator=g).float()
    txt = img[t2i] + torch.randint(-2, 3, (len(t2i), d), generator=g).float()
    ours = retrieval_ranks(img, txt, t2i, text_chunk, image_chunk)
    expected = _brute_force_ranks(img, txt, t2i)
    assert torch.equal(ours[0], expected[0]) and torch.equal(ours[1], expected[1])
    assert 0 < int((ours[0] > 0).sum()) < len(t2i)


def test_retrieval_rejects_bad_index():
    img, txt = random_unit(3, 4, 0), random_unit(3, 4, 1)
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(img, txt, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="must index the 3 images"):
        retrieval_metrics(img, txt, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="expected"):
        retrieval_metrics(img, txt, torch.tensor([0, 1]))


@pytest.mark.slow
def test_fused_comparisons_equal_eager():
    """The torch.compile'd single-pass counter (used for large CPU problems) gives the eager ranks."""
    from mmcl.eval import metrics

    if metrics._fused_counter() is None:  # torch.compile itself unavailable
        pytest.skip("torch.compile is unavailable here")
    g = torch.Generator().manual_seed(3)
    t2i = torch.cat([torch.arange(300), torch.randint(0, 300, (700,), generator=g)])
    img = torch.randint(-3, 4, (300, 8), generator=g).float()
    txt = img[t2i] + torch.randint(-2, 3, (1000, 8), generator=g).float()
    eager = metrics.retrieval_ranks(img, txt, t2i, 64, 128, fused=False)
    fused = metrics.retrieval_ranks(img, txt, t2i, 64, 128, fused=True)  # 1000 % 64 and 300 % 128: edge tiles
    assert "error" not in metrics._COMPILED, metrics._COMPILED.get("error")  # the compiled kernel really ran
    assert torch.equal(eager[0], fused[0]) and torch.equal(eager[1], fused[1])
    # the tie counts too (integer features: many exact ties), hence the same CLIP_benchmark recall
    ks = (1, 5, 10)
    m_eager = metrics.retrieval_metrics(img, txt, t2i, ks, 64, 128, fused=False, optimistic=True)
    assert metrics.retrieval_metrics(img, txt, t2i, ks, 64, 128, fused=True, optimistic=True) == m_eager
