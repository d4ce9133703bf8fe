"""Every registered loss under data parallelism (real gloo process groups): the mean of the ranks'
losses and the DDP-averaged gradients equal one process on the whole batch, uneven batches included.

One spawn per world size: each worker runs every case and returns its values and gradients."""

import functools
import itertools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import mmcl

# How each loss is called: "pair" = (image, text, scale, bias); "views" = (z0, z1); "labels" = (z0, z1, labels);
# "labels1" = (z0, None, labels); "negatives" = "pair" + text_negatives (a function of a and b);
# "some-negatives" = "negatives" for the rows whose label is 1 only (data.negatives_fraction < 1: a rank
# may have none);
# "pair-keys" = "pair" with the labels as the batch's caption keys; "pair-words" = "pair" with the labels
# picking each caption's words from WORDS (one-way containment: caption 0 within 1, 1 within 2).
# Registered names missing here (e.g. a memory-bank loss) are skipped.
CASES = {
    "infonce": ("infonce", {}, "pair"),
    "infonce-smooth": ("infonce", {"label_smoothing": 0.1}, "pair"),
    "infonce-chunked": ("infonce", {"chunk_size": 3, "label_smoothing": 0.1}, "pair"),
    "infonce-negatives": ("infonce", {}, "negatives"),  # NegCLIP: hard-negative captions as extra columns
    "infonce-some-negatives": ("infonce", {}, "some-negatives"),
    "siglip": ("siglip", {}, "pair"),
    "siglip-chunked": ("siglip", {"chunk_size": 2}, "pair"),
    "triplet": ("triplet", {}, "pair"),
    "ntxent": ("ntxent", {}, "views"),
    "ntxent-t0.1": ("ntxent", {"temperature": 0.1}, "views"),
    "supcon": ("supcon", {}, "labels"),
    "supcon-1view": ("supcon", {}, "labels1"),
    "dcl": ("dcl", {}, "views"),
    "dclw": ("dclw", {}, "views"),
    "hcl": ("hcl", {}, "views"),
    "hcl-hard": ("hcl", {"temperature": 0.2, "beta": 5.0, "tau_plus": 0.5}, "views"),
    # the centroids start on the first (gathered) batch, so the policies act in the compared call
    "cluster-mask": ("cluster_infonce", {"k": 3, "false_negatives": "mask"}, "pair"),
    "cluster-periodic": (
        "cluster_infonce",
        {"k": 3, "false_negatives": "mask", "mode": "periodic", "bank_size": 16, "recluster_every": 1},
        "pair",
    ),
    "cluster-hard": (
        "cluster_infonce",
        {"k": 3, "false_negatives": "mask", "hard_negatives": 1, "hard_log_weight": 0.5, "centroid_columns": True},
        "pair",
    ),
    "cluster-margin": ("cluster_infonce", {"k": 3, "false_negatives": "margin", "margin_weight": 0.5}, "pair"),
    "cluster-calibrated": ("cluster_infonce", {"k": 3, "false_negatives": "none", "weighting": "calibrated"}, "pair"),
    # captions keyed by the labels (3 values): many duplicate pairs, across ranks too
    "cluster-duplicates": ("cluster_infonce", {"k": 3, "duplicate_captions": "mask"}, "pair-keys"),
    "cluster-duplicates-positive": (
        "cluster_infonce",
        {"k": 3, "false_negatives": "mask", "duplicate_captions": "positive"},
        "pair-keys",
    ),
    "cluster-negatives": ("cluster_infonce", {"k": 3, "false_negatives": "mask"}, "negatives"),  # NegCLIP columns
    "cluster-some-negatives": ("cluster_infonce", {"k": 3, "false_negatives": "mask"}, "some-negatives"),
    "cluster-contained": (
        "cluster_infonce",
        {"k": 3, "duplicate_captions": "mask", "caption_match": "contained"},
        "pair-words",
    ),
    "cluster-contained-positive": (
        "cluster_infonce",
        {"k": 3, "false_negatives": "mask", "duplicate_captions": "positive", "caption_match": "contained"},
        "pair-words",
    ),
}
WORDS = torch.tensor([[7, 0, 0], [5, 7, 0], [5, 7, 9]])  # word keys of the three captions, 0-padded
BUILT = {name for name, _, _ in CASES.values()}
CASE_IDS = [case for case, (name, _, _) in CASES.items() if name in mmcl.list_losses()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole_batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 6, generator=g, dtype=torch.float64)
    b = torch.randn(n, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    scale, bias = torch.tensor(4.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    return a, b, labels, scale, bias


def run_case(case, a, b, labels, scale, bias, loss_kwargs=None):
    """Forward + backward one case; returns (loss, [feature leaves], [scalar leaves])."""
    name, kwargs, style = CASES[case]
    loss_fn = mmcl.create_loss(name, **kwargs, **(loss_kwargs or {}))
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    s, c = scale.clone().requires_grad_(), bias.clone().requires_grad_()
    if style in ("pair", "pair-keys", "pair-words"):
        if style == "pair-keys":
            loss_fn.batch_caption_keys = labels
        elif style == "pair-words":
            loss_fn.batch_caption_words = WORDS[labels]
        loss = loss_fn(F.normalize(a, dim=-1), F.normalize(b, dim=-1), s, c)
        feats, scalars = [a, b], [s, c]
    elif style in ("negatives", "some-negatives"):
        negatives = F.normalize(b[:, [1, 2, 3, 4, 5, 0]] + 0.5 * a, dim=-1)
        if style == "some-negatives":
            negatives = negatives[labels == 1]
        loss = loss_fn(F.normalize(a, dim=-1), F.normalize(b, dim=-1), s, c, text_negatives=negatives)
        feats, scalars = [a, b], [s, c]
    elif style == "views":
        loss, feats, scalars = loss_fn(a, b), [a, b], []
    elif style == "labels":
        loss, feats, scalars = loss_fn(a, b, labels), [a, b], []
    else:
        loss, feats, scalars = loss_fn(a, None, labels), [a], []
    loss.backward()
    return loss.detach(), feats, scalars


def grad_or_zero(x):
    return x.grad if x.grad is not None else torch.zeros_like(x)


def worker(rank, world, port, all_sizes, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for sizes, case in itertools.product(all_sizes, CASE_IDS):
        a, b, labels, scale, bias = whole_batch(sum(sizes))
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        loss, feats, scalars = run_case(case, a[lo:hi], b[lo:hi], labels[lo:hi], scale, bias)
        # DDP averages parameter gradients: a rank's effective feature gradient is x.grad / W; replicated
        # scalars (scale, bias) are all-reduced then divided by W.
        scalar_grads = [grad_or_zero(s) for s in scalars]
        for g in scalar_grads:
            dist.all_reduce(g)
        losses = [torch.zeros((), dtype=torch.float64) for _ in range(world)]
        dist.all_gather(losses, loss)
        results[sizes, case] = {
            "loss": torch.stack(losses).mean(),
            "feats": [grad_or_zero(x) / world for x in feats],
            "scalars": [g / world for g in scalar_grads],
        }
    out[rank] = results
    dist.destroy_process_group()


# Per-rank batch sizes, equal and uneven; all configurations of one world size share one spawn.
SIZES = [(4, 4), (3, 5), pytest.param((2, 3, 3, 2), marks=pytest.mark.slow)]
BY_WORLD = {2: [(4, 4), (3, 5)], 4: [(2, 3, 3, 2)]}


@functools.cache
def distributed_results(world):
    out = mp.Manager().dict()
    mp.spawn(worker, args=(world, free_port(), BY_WORLD[world], out), nprocs=world, join=True)
    return dict(out)


def test_every_built_loss_is_registered_and_covered():
    assert BUILT <= set(mmcl.list_losses())


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", CASE_IDS)
def test_matches_single_process_whole_batch(sizes, case):
    world = len(sizes)
    results = distributed_results(world)
    a, b, labels, scale, bias = whole_batch(sum(sizes))
    ref, feats, scalars = run_case(case, a, b, labels, scale, bias)
    tol = dict(rtol=1e-10, atol=1e-12)
    for rank in range(world):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        r = results[rank][sizes, case]
        torch.testing.assert_close(r["loss"], ref, **tol)
        for got, x in zip(r["feats"], feats):
            torch.testing.assert_close(got, grad_or_zero(x)[lo:hi], **tol)
        for got, s in zip(r["scalars"], scalars):
            torch.testing.assert_close(got, grad_or_zero(s), **tol)


def test_explicit_rank_and_world_size_in_one_process_is_plain_loss():
    # rank/world_size given explicitly as (0, 1) must behave exactly like the default
    a, b, labels, scale, bias = whole_batch(5)
    for case in CASE_IDS:
        default, _, _ = run_case(case, a, b, labels, scale, bias)
        explicit, _, _ = run_case(case, a, b, labels, scale, bias, {"rank": 0, "world_size": 1})
        torch.testing.assert_close(default, explicit, rtol=0, atol=0)
