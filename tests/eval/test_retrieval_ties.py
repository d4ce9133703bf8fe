"""Recall@k on tied scores (repeated captions, duplicate images) equals CLIP_benchmark's own code,
exactly, on the same embeddings; the optimistic figure (ties to the query) only when asked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcl.eval.metrics import retrieval_metrics, retrieval_ranks
from mmcl.eval.retrieval import same_caption_same_embedding

from .test_metrics import TableModel, TableTokenizer

KS = (1, 2, 5, 10)


def tied_set(n_img: int, n_distinct: int, seed: int, duplicate_images: int = 0, d: int = 16):
    """Raw (unnormalised) image and caption tables where most captions repeat: ``n_distinct``
    caption texts for ``n_img`` images, 1-3 captions per image, the first one the image's own class
    (so recall is not at chance) and the others drawn at random. Identical captions are identical
    rows. ``duplicate_images`` images copy another image's row (ties among images too)."""
    g = torch.Generator().manual_seed(seed)
    vocab = torch.randn(n_distinct, d, generator=g)
    cls = torch.randint(0, n_distinct, (n_img,), generator=g)
    images = vocab[cls] + 1.2 * torch.randn(n_img, d, generator=g)
    if duplicate_images:
        images[:duplicate_images] = images[n_img - duplicate_images :]
    per_image = torch.randint(1, 4, (n_img,), generator=g).tolist()
    caption_ids, text_to_image = [], []
    for i, c in enumerate(per_image):
        caption_ids += [int(cls[i])] + torch.randint(0, n_distinct, (c - 1,), generator=g).tolist()
        text_to_image += [i] * c
    return images, vocab[torch.tensor(caption_ids)], torch.tensor(text_to_image), per_image


def clip_benchmark_recall(images, texts, text_to_image, per_image, ks=KS, batch_size=32):
    """CLIP_benchmark's ``zeroshot_retrieval.evaluate`` through a table-lookup model: it normalises
    the rows, multiplies them in one GEMM and takes ``torch.topk`` per query, batch by batch."""
    from clip_benchmark.metrics import zeroshot_retrieval

    captions = [f"t{i}" for i in range(len(text_to_image))]
    items, start = [], 0
    for i, c in enumerate(per_image):
        items.append((torch.tensor([float(i)]), captions[start : start + c]))
        start += c
    loader = torch.utils.data.DataLoader(
        items, batch_size=batch_size, collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])
    )
    model, tok = TableModel(images, texts), TableTokenizer(captions)
    return zeroshot_retrieval.evaluate(model, loader, tok, "cpu", amp=False, recall_k_list=list(ks))


@pytest.mark.parametrize(
    "n_img,n_distinct,seed,dup",
    [
        (200, 8, 0, 0),  # the shape: 200 images, 8 distinct captions
        (200, 8, 1, 20),  # and duplicate images: ties in caption -> image retrieval too
        (37, 3, 2, 4),  # small: torch.topk's introselect path (64 k > N) for every k
        (700, 80, 3, 0),  # its heap path (64 k <= N) for every k in both directions
        (200, 3, 16, 0),  # 3 distinct captions, ~130 copies each
    ],
)
@pytest.mark.parametrize("tiles", [(None, None), (7, 13), (64, 50)])
def test_recall_equals_clip_benchmark_with_repeated_captions(n_img, n_distinct, seed, dup, tiles):
    images, texts, text_to_image, per_image = tied_set(n_img, n_distinct, seed, dup)
    theirs = clip_benchmark_recall(images, texts, text_to_image, per_image)
    # the embeddings CLIP_benchmark scores: its F.normalize of the table rows
    img, txt = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    ours = retrieval_metrics(img, txt, text_to_image, KS, chunk_size=tiles[0], image_chunk=tiles[1], optimistic=True)
    for key, value in theirs.items():
        assert ours[key] == value, key
    # ties decide: resolved in the query's favour, image -> text recall is far higher
    assert ours["text_retrieval_recall_optimistic@1"] > ours["text_retrieval_recall@1"]


def test_the_optimistic_figure_is_what_ties_to_the_query_give():
    """Image -> text R@1 = R@5 = R@10 when a query's own caption group comes first, as mmcl reported
    on MNIST with captions from labels; CLIP_benchmark's topk keeps a few of the tied captions."""
    images, texts, text_to_image, per_image = tied_set(400, 10, 5)
    img, txt = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    m = retrieval_metrics(img, txt, text_to_image, KS, optimistic=True)
    t2i_rank, i2t_rank = retrieval_ranks(img, txt, text_to_image)
    for k in KS:
        assert m[f"text_retrieval_recall_optimistic@{k}"] == (i2t_rank < k).float().mean().item()
        assert m[f"image_retrieval_recall_optimistic@{k}"] == (t2i_rank < k).float().mean().item()
        assert m[f"text_retrieval_recall@{k}"] <= m[f"text_retrieval_recall_optimistic@{k}"]
    assert m["text_retrieval_recall_optimistic@1"] == m["text_retrieval_recall_optimistic@10"]
    assert m["text_retrieval_recall@1"] < m["text_retrieval_recall@10"]
    plain = retrieval_metrics(img, txt, text_to_image, KS)
    assert not any("optimistic" in k for k in plain)
    assert {k: v for k, v in m.items() if "optimistic" not in k} == plain


def test_mean_rank_breaks_ties_at_random():
    """Expected rank of the first correct item with ties in random order: above + (tied + 1) /
    (tied positives + 1), from exact integer scores."""
    g = torch.Generator().manual_seed(11)
    n_img, d = 60, 5
    text_to_image = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (90,), generator=g)])
    img = torch.randint(-2, 3, (n_img, d), generator=g).float()
    txt = torch.randint(-2, 3, (len(text_to_image), d), generator=g).float()  # exact, heavily tied scores
    scores = txt.double() @ img.double().T
    own = torch.zeros_like(scores, dtype=torch.bool)
    own[torch.arange(len(text_to_image)), text_to_image] = True
    pos = scores[own]
    t2i = (scores > pos[:, None]).sum(1) + ((scores == pos[:, None]).sum(1) + 1) / 2
    best = torch.where(own, scores, -float("inf")).max(0).values
    tied = (scores == best[None]).sum(0)
    tied_pos = ((scores == best[None]) & own).sum(0)
    i2t = (scores > best[None]).sum(0) + (tied + 1) / (tied_pos + 1)
    m = retrieval_metrics(img, txt, text_to_image, (1,), chunk_size=16, image_chunk=16)
    assert m["image_retrieval_mean_rank"] == pytest.approx(t2i.mean().item())
    assert m["image_retrieval_median_rank"] == pytest.approx(t2i.median().item())
    assert m["text_retrieval_mean_rank"] == pytest.approx(i2t.mean().item())
    assert m["text_retrieval_median_rank"] == pytest.approx(i2t.median().item())


def test_near_ties_within_rounding_follow_topk():
    """A competitor a unit or two of rounding above the positive: the streamed tiles cannot tell it
    from a tie, so torch.topk decides on the rebuilt row, as in CLIP_benchmark (the optimistic
    figure, like mmcl before, gives the caption to its own image)."""
    img = F.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    txt = F.normalize(img + 0.3 * torch.randn(300, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    img[1] = F.normalize(img[0] + 5e-7 * txt[0], dim=-1)  # image 1 scores a hair above caption 0's own image
    scores = txt @ img.T
    assert 0 < scores[0, 1] - scores[0, 0] < 2e-7 and torch.topk(scores[0], 1).indices.item() == 1
    ours = retrieval_metrics(img, txt, torch.arange(300), (1,), optimistic=True)
    expected = (torch.topk(scores, 1, dim=1).indices[:, 0] == torch.arange(300)).float().mean().item()
    assert ours["image_retrieval_recall@1"] == expected
    assert ours["image_retrieval_recall_optimistic@1"] == pytest.approx(expected + 1 / 300)


def test_identical_rows_are_found_wherever_they_sit():
    """Equal rows must get one key in any position: a float projection through a BLAS product rounds
    a row differently with its position, which split a tied caption group in two."""
    from mmcl.eval.metrics import _unique_rows

    g = torch.Generator().manual_seed(0)
    for n, d, distinct in ((407, 32, 3), (20000, 768, 50), (5, 3, 1)):
        x = torch.randn(distinct, d, generator=g)[torch.randint(0, distinct, (n,), generator=g)]
        unique, inverse = _unique_rows(x)
        assert len(unique) == len(torch.unique(x, dim=0)) and torch.equal(unique[inverse], x)
    x = torch.randn(9, 4, generator=g)
    unique, inverse = _unique_rows(x)
    assert unique is x and inverse is None  # all distinct: no copy


def test_repeated_captions_share_one_embedding():
    feats = torch.arange(12.0).view(6, 2)
    out = same_caption_same_embedding(feats, ["a", "b", "a", "c", "b", "a"])
    assert out[[0, 2, 5]].tolist() == [[0.0, 1.0]] * 3 and out[[1, 4]].tolist() == [[2.0, 3.0]] * 2
    assert out[3].tolist() == [6.0, 7.0]
    assert same_caption_same_embedding(feats, list("abcdef")) is feats
