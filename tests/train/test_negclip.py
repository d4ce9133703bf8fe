"""NegCLIP-style hard-negative captions: the loss's math, the data path (JSONL negatives, one
seeded pick per read, skips), a training run that uses them, and the errors for unsupported set-ups."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.data import PairedImageTextDataset
from mmcl.data.collate import ImageTextCollate
from mmcl.errors import ConfigError
from mmcl.eval.compositional import shapes_compositional_items
from mmcl.recipe import recipe_from_dict
from mmcl.train.recipes import check_recipe

from ..conftest import tiny_recipe_dict


@pytest.mark.parametrize("m", [5, 2, 0])  # one negative per pair, or fewer (data.negatives_fraction < 1)
def test_infonce_with_text_negatives_matches_handwritten_math(m):
    g = torch.Generator().manual_seed(0)
    x, y, neg = (F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(3))
    neg = neg[:m]
    s = 7.0
    got = mmcl.create_loss("infonce")(x, y, torch.tensor(s, dtype=torch.float64), text_negatives=neg)
    total = 0.0
    for i in range(5):
        cols = [s * float(x[i] @ c) for c in torch.cat([y, neg])]  # image i: every caption and negative
        total += -(cols[i] - math.log(sum(math.exp(v) for v in cols)))
        rows = [s * float(y[i] @ r) for r in x]  # caption i: the images only
        total += -(rows[i] - math.log(sum(math.exp(v) for v in rows)))
    assert abs(float(got) - total / 10) < 1e-10
    plain = mmcl.create_loss("infonce")(x, y, torch.tensor(s, dtype=torch.float64))
    if m:
        assert float(got) > float(plain)  # the negatives add columns to the image->text softmax
    else:
        torch.testing.assert_close(got, plain)
    with pytest.raises(ValueError, match=r"text_negatives must be \(M, 4\)"):
        mmcl.create_loss("infonce")(x, y, torch.tensor(s), text_negatives=neg[:, :3])
    with pytest.raises(ValueError, match="chunk_size"):
        mmcl.create_loss("infonce", chunk_size=2)(x, y, torch.tensor(s), text_negatives=neg)


def test_cluster_infonce_takes_the_negatives_after_its_policies():
    g = torch.Generator().manual_seed(1)
    x, y, neg = (F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(3))
    s = torch.tensor(7.0, dtype=torch.float64)
    keys = torch.tensor([1, 2, 1, 3, 4, 2])
    for mode, m in (("mask", 6), ("positive", 6), ("mask", 2), ("positive", 3)):
        loss_fn = mmcl.create_loss("cluster_infonce", gate=-1.0, duplicate_captions=mode)
        loss_fn.batch_caption_keys = keys
        got = loss_fn(x, y, s, text_negatives=neg[:m])
        dup = (keys[:, None] == keys[None, :]) & ~torch.eye(6, dtype=torch.bool)
        total = 0.0
        for i in range(6):
            # image i: every caption (duplicates masked, or positives) and every negative caption
            li = torch.cat([s * y @ x[i], s * neg[:m] @ x[i]])
            lt = s * x @ y[i]  # caption i: the images only
            if mode == "mask":
                li[:6] = li[:6].masked_fill(dup[i], float("-inf"))
                lt = lt.masked_fill(dup[:, i], float("-inf"))
                total += -li.log_softmax(0)[i] - lt.log_softmax(0)[i]
            else:
                pos = dup[i] | (torch.arange(6) == i)
                total += -li.log_softmax(0)[:6][pos].mean() - lt.log_softmax(0)[pos].mean()
        torch.testing.assert_close(got, total / 12)
    with pytest.raises(ValueError, match=r"text_negatives must be \(M, 4\)"):
        mmcl.create_loss("cluster_infonce")(x, y, s, text_negatives=neg[:, :3])


@pytest.fixture
def negatives_corpus(tiny_corpus, tmp_path):
    path = tmp_path / "train-neg.jsonl"
    counts = shapes_compositional_items(tiny_corpus / "train.csv", path, merge=True)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert counts["all"] == len(rows) and all(len(r["negatives"]) >= 2 for r in rows)
    return path, rows


def test_merged_items_can_keep_each_rows_own_caption(tiny_corpus, negatives_corpus, tmp_path, capsys):
    import csv

    from mmcl.cli import main

    out = tmp_path / "kept.jsonl"
    assert (
        main(["data", "make-compositional", str(tiny_corpus / "train.csv"), str(out), "--merge", "--keep-captions"])
        == 0
    )
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    with open(tiny_corpus / "train.csv", newline="") as f:
        table = list(csv.DictReader(f))
    titles = [r["title"] for r in table]
    assert [r["caption"] for r in kept] == titles
    for row in kept:  # each negative: one or two of the caption's own words changed
        words = row["caption"].split()
        assert 2 <= len(row["negatives"]) <= 4
        for negative in row["negatives"]:
            changed = sum(a != b for a, b in zip(words, negative.split()))
            assert len(negative.split()) == len(words) and changed in (1, 2), (row["caption"], negative)
    assert main(["data", "make-compositional", str(tiny_corpus / "train.csv"), str(out), "--keep-captions"]) != 0
    assert "--keep-captions applies to --merge" in capsys.readouterr().err

    # --prefer: only the swaps where a caption has one (two objects), all its edits otherwise
    swaps = tmp_path / "swaps.jsonl"
    args = ["data", "make-compositional", str(tiny_corpus / "train.csv"), str(swaps), "--merge", "--keep-captions"]
    assert main([*args, "--prefer", "swap_colours", "swap_relation"]) == 0
    swapped = [json.loads(x) for x in swaps.read_text().splitlines()]
    assert [r["caption"] for r in swapped] == titles
    two_objects = 0
    for row, full, r in zip(swapped, kept, table):
        words = row["caption"].split()
        if len(r["key"].split("|")) == 4:  # two objects and a relation
            two_objects += 1
            assert set(row["negatives"]) < set(full["negatives"]) and 1 <= len(row["negatives"]) <= 2
            for negative in row["negatives"]:  # a swap: the same words, or the relation inverted
                assert (
                    sorted(negative.split()) == sorted(words)
                    or sum(a != b for a, b in zip(words, negative.split())) == 1
                )
        else:
            assert row["negatives"] == full["negatives"]
    assert two_objects > 0
    with pytest.raises(ConfigError, match="unknown negative types.*valid choices: replace_colour"):
        shapes_compositional_items(tiny_corpus / "train.csv", swaps, merge=True, prefer=("swap_shapes",))


def test_items_carry_one_seeded_negative_and_rows_without_one_are_skipped(negatives_corpus, tmp_path):
    path, rows = negatives_corpus
    rows[0]["negatives"] = []
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = PairedImageTextDataset(
        broken, lambda im: torch.zeros(3, 8, 8), caption_key="caption", negatives_key="negatives"
    )
    assert ds[0] == (None, "no_negative")
    item = ds[1]
    assert item["negative"] in rows[1]["negatives"] and item["negative"] != item["text"]
    assert ds[1]["negative"] == item["negative"]  # the same pick on every read of an epoch
    picks = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        picks.add(ds[1]["negative"])
    assert len(picks) > 1  # every negative is used over the epochs

    def tokenize(texts):
        lengths = [len(t.split()) for t in texts]
        ids = torch.zeros(len(texts), max(lengths), dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, :n] = i + 1
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    batch = ImageTextCollate(tokenize)([ds[0], ds[1], ds[2]])
    assert batch["skipped"] == {"no_negative": 1} and batch["size"] == 2
    assert batch["neg_input_ids"].shape == batch["input_ids"].shape == batch["neg_attention_mask"].shape

    # data.negatives_fraction: a seeded share of the rows carries its negative, a new draw per epoch
    some = PairedImageTextDataset(
        path, lambda im: torch.zeros(3, 8, 8), caption_key="caption", negatives_key="negatives", negatives_fraction=0.3
    )
    rows = [json.loads(x) for x in path.read_text().splitlines()]  # as written (row 0 was emptied above)
    carried = []
    for epoch in range(4):
        some.set_epoch(epoch)
        items = [some[i] for i in range(len(rows))]
        assert [it["negative"] for it in items] == [some[i]["negative"] for i in range(len(rows))]
        carried.append([it["negative"] is not None for it in items])
        batch = ImageTextCollate(tokenize)(items)
        assert batch["neg_input_ids"].shape[0] == sum(carried[-1]) and batch["size"] == len(rows)
        for it in items:
            assert it["negative"] is None or it["negative"] in rows[it["index"]]["negatives"]
    share = sum(map(sum, carried)) / (4 * len(rows))
    assert 0.15 < share < 0.45 and len({tuple(c) for c in carried}) > 1, share
    none = ImageTextCollate(tokenize)([{**it, "negative": None} for it in items])
    assert none["neg_input_ids"].shape == (0, none["input_ids"].shape[1])


def negclip_recipe(tiny_corpus, path, out, **train):
    data = tiny_recipe_dict(tiny_corpus, out, **train)
    data["eval"]["datasets"] = []
    data["data"].update(train=str(path), caption_key="caption", negatives_key="negatives")
    return data


def test_training_uses_the_negatives(tiny_corpus, negatives_corpus, tmp_path):
    path, _ = negatives_corpus

    def first_loss(data):
        mmcl.Trainer(recipe_from_dict(data)).fit()
        lines = (tmp_path / data["name"] / "metrics.jsonl").read_text().splitlines()
        return next(json.loads(x)["train/loss"] for x in lines if "train/loss" in x)

    with_neg = negclip_recipe(tiny_corpus, path, tmp_path / "neg", steps=2)
    with_neg["name"], with_neg["train"]["output_dir"] = "neg", str(tmp_path / "neg")
    without = negclip_recipe(tiny_corpus, path, tmp_path / "plain", steps=2)
    without["data"]["negatives_key"] = None
    without["name"], without["train"]["output_dir"] = "plain", str(tmp_path / "plain")
    half = negclip_recipe(tiny_corpus, path, tmp_path / "half", steps=2)
    half["data"]["negatives_fraction"] = 0.5
    half["name"], half["train"]["output_dir"] = "half", str(tmp_path / "half")
    # batch 8: log(16) columns per image instead of log(8) at random init
    losses = first_loss(without), first_loss(half), first_loss(with_neg)
    assert losses[2] > losses[0] + 0.1
    # same init and batch: half the rows' negatives are a subset of all of them (some, not none)
    assert losses[0] < losses[1] < losses[2], losses


def test_negatives_without_gradient_train_only_the_images_on_them(tiny_corpus, negatives_corpus, tmp_path):
    # data.negatives_grad: false encodes the negatives by a separate no-grad pass: the same loss, the
    # same image-tower gradient, and a text-tower gradient from the captions alone
    from mmcl.losses.base import call_cross_modal

    path, _ = negatives_corpus
    trainers = {}
    for grad in (True, False):
        data = negclip_recipe(tiny_corpus, path, tmp_path / str(grad), steps=1)
        data["data"]["negatives_grad"] = grad
        trainers[grad] = mmcl.Trainer(recipe_from_dict(data))
        trainers[grad].model.eval()  # no dropout: the two passes see the same towers
    batch = next(iter(trainers[True].loader))
    assert batch["neg_input_ids"].shape[0] > 0

    def run(trainer, b):
        trainer.model.zero_grad()
        loss = trainer._batch_loss(b)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    (loss_joint, g_joint), (loss_sep, g_sep) = run(trainers[True], batch), run(trainers[False], batch)
    torch.testing.assert_close(loss_sep, loss_joint, rtol=1e-5, atol=1e-6)
    vision = [n for n in g_joint if n.startswith(("vision.", "image_proj."))]
    text = [n for n in g_joint if n.startswith(("text.", "text_proj."))]
    assert vision and text
    for n in vision + ["logit_scale"]:
        torch.testing.assert_close(g_sep[n], g_joint[n], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(g_sep[n], g_joint[n], atol=1e-6) for n in text)

    model = trainers[False].model  # by hand: the negatives' embeddings detached
    model.zero_grad()
    out = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    neg = model.encode_text(batch["neg_input_ids"], batch["neg_attention_mask"]).detach()
    loss = call_cross_modal(
        trainers[False].loss_fn, out.image_embeds, out.text_embeds, out.logit_scale, text_negatives=neg
    )
    loss.backward()
    for n in text:
        torch.testing.assert_close(g_sep[n], dict(model.named_parameters())[n].grad, rtol=1e-4, atol=1e-6)

    # a step in which no row carries its negative (data.negatives_fraction < 1): the plain loss
    empty = {
        **batch,
        "neg_input_ids": batch["neg_input_ids"][:0],
        "neg_attention_mask": batch["neg_attention_mask"][:0],
    }
    plain = {k: v for k, v in batch.items() if not k.startswith("neg_")}
    torch.testing.assert_close(run(trainers[False], empty)[0], run(trainers[False], plain)[0])


def test_unsupported_set_ups_are_named(tiny_corpus, negatives_corpus, tmp_path):
    path, _ = negatives_corpus
    data = negclip_recipe(tiny_corpus, path, tmp_path / "r")
    data["loss"] = {"name": "siglip"}
    scored_by = "negatives_key: hard-negative captions are scored by loss.name: cluster_infonce, infonce"
    with pytest.raises(ConfigError, match=scored_by):
        check_recipe(recipe_from_dict(data))
    data = negclip_recipe(tiny_corpus, path, tmp_path / "r")
    for bad in (0.0, 1.5):
        data["data"]["negatives_fraction"] = bad
        with pytest.raises(ConfigError, match=r"negatives_fraction must be in \(0, 1\]"):
            check_recipe(recipe_from_dict(data))
    data["data"].update(negatives_fraction=0.5, negatives_key=None)
    with pytest.raises(ConfigError, match="negatives_fraction needs data.negatives_key"):
        check_recipe(recipe_from_dict(data))
    data["data"].update(negatives_fraction=1.0, negatives_grad=False)
    with pytest.raises(ConfigError, match="negatives_grad: false needs data.negatives_key"):
        check_recipe(recipe_from_dict(data))
    data = negclip_recipe(tiny_corpus, path, tmp_path / "r", accumulation_steps=2)
    with pytest.raises(ConfigError, match="accumulation_steps > 1 yet; valid value: 1"):
        check_recipe(recipe_from_dict(data))
    data = negclip_recipe(tiny_corpus, path, tmp_path / "r")
    data["data"]["train"] = str(tiny_corpus)  # a folder: not a CSV/JSONL source
    data["data"]["source"] = "folder"
    with pytest.raises(ConfigError, match="valid sources for it: csv, jsonl"):
        mmcl.Trainer(recipe_from_dict(data))
