"""GradCache accumulation: the towers and the logit scale get exactly the large-batch gradient."""

import json

import pytest
import torch

import mmcl
from mmcl.data import Tokenize, load_tokenizer
from mmcl.recipe import ModelConfig, TextConfig, VisionConfig, recipe_from_dict
from mmcl.train.grad_cache import grad_cache_backward

from ..conftest import MINILM, TINY_BERT, TINY_VIT, tiny_recipe_dict

CAPTIONS = [
    f"a {c} {s} at the {p}" for c in ("red", "blue", "green") for s in ("circle", "star") for p in ("top", "left")
]


def make(dropout=0.0, vision=None):
    torch.manual_seed(0)
    text = TextConfig(
        config={**TINY_BERT, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}, tokenizer=MINILM
    )
    cfg = ModelConfig(vision=vision or VisionConfig(**TINY_VIT), text=text, embed_dim=8)
    model = mmcl.create_model(cfg).double()
    tok = Tokenize(load_tokenizer(text), 16)(CAPTIONS)
    images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, {"images": images, **tok}


def split(batch, k):
    n = batch["images"].shape[0] // k
    return [{key: v[i * n : (i + 1) * n] for key, v in batch.items()} for i in range(k)]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def full_batch_grads(model, batch, loss_fn):
    model.zero_grad()
    out = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    loss = loss_fn(out.image_embeds, out.text_embeds, out.logit_scale)
    loss.backward()
    return loss.detach(), grads(model)


def test_gradients_equal_full_batch_in_fp64():
    model, batch = make()
    loss_fn = mmcl.create_loss("infonce")
    ref_loss, ref = full_batch_grads(model, batch, loss_fn)
    model.zero_grad()
    loss = grad_cache_backward(model, loss_fn, split(batch, 4))
    got = grads(model)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-9, atol=1e-12, msg=name)
    # the known peer pitfall: the scale must not receive k times its gradient
    assert abs(got["logit_scale"] - ref["logit_scale"]) < 1e-12


def test_dropout_is_replayed():
    """With dropout on, GradCache equals the gradient of the same micro-batch forwards kept in one
    graph (same RNG stream, so the same masks)."""
    model, batch = make(dropout=0.3)
    loss_fn = mmcl.create_loss("infonce")
    micro = split(batch, 3)
    torch.manual_seed(7)
    outs = [model(b["images"], b["input_ids"], b["attention_mask"]) for b in micro]
    loss = loss_fn(
        torch.cat([o.image_embeds for o in outs]), torch.cat([o.text_embeds for o in outs]), outs[0].logit_scale
    )
    model.zero_grad()
    loss.backward()
    ref = grads(model)
    model.zero_grad()
    torch.manual_seed(7)
    grad_cache_backward(model, loss_fn, micro)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, ref[name], rtol=1e-9, atol=1e-12, msg=name)


def test_batchnorm_statistics_updated_once_per_micro_batch():
    model, batch = make(vision=VisionConfig(name="resnet10t", image_size=32))
    micro = split(batch, 2)
    start = {n: b.clone() for n, b in model.named_buffers()}
    for b in micro:  # what plain training would do: one forward per micro-batch
        model(b["images"], b["input_ids"], b["attention_mask"])
    expected = {n: b.clone() for n, b in model.named_buffers()}
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(start[n])
    grad_cache_backward(model, mmcl.create_loss("infonce"), micro)
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, expected[n], msg=n)


def loss_curve(corpus, out, batch_size, accumulation):
    data = tiny_recipe_dict(corpus, out, steps=5, checkpoint_every=100, accumulation_steps=accumulation)
    data["data"]["batch_size"] = batch_size
    data["eval"]["datasets"] = []
    data["model"]["text"]["config"] = {
        **data["model"]["text"]["config"],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    mmcl.Trainer(recipe_from_dict(data)).fit()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x["train/loss"] for x in lines if "train/loss" in x]


def test_accumulated_training_follows_the_large_batch_curve(tiny_corpus, tmp_path):
    big = loss_curve(tiny_corpus, tmp_path / "big", batch_size=16, accumulation=1)
    acc = loss_curve(tiny_corpus, tmp_path / "acc", batch_size=4, accumulation=4)
    small = loss_curve(tiny_corpus, tmp_path / "small", batch_size=4, accumulation=1)
    assert len(big) == len(acc) == 5
    torch.testing.assert_close(torch.tensor(acc), torch.tensor(big), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(torch.tensor(small), torch.tensor(big), rtol=1e-2)  # the test can fail


def make_image_image(head="mlp", momentum=None, vision2=None, dense=False):
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="image_image",
        vision=VisionConfig(**TINY_VIT),
        vision2=VisionConfig(**vision2) if vision2 else None,
        head=head,
        embed_dim=8,
        momentum=momentum,
        dense=dense,
    )
    model = mmcl.create_model(cfg).double()
    g = torch.Generator().manual_seed(1)
    n = 12
    batch = {
        "images": torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
        "images2": torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
        "label": torch.tensor([0, 1, 2, 0, 1, 2, -1, -1, 3, 3, 0, 1]),  # -1: unlabelled (SupCon)
        "index": torch.arange(n),
    }
    return model, batch


IMAGE_IMAGE_CASES = {
    "ntxent": ({}, {}),  # two views through one tower
    "supcon": ({}, {}),  # labels and sample ids of every micro-batch reach the loss
    "infonce": ({"vision2": TINY_VIT}, {}),  # two image modalities, two towers, the logit scale learnt
    "moco": ({"head": "mocov2", "momentum": 0.9}, {"queue_size": 24}),  # key encoder + queue
    "densecl": ({"head": "mocov2", "momentum": 0.9, "dense": True}, {"queue_size": 24, "warmup_steps": 0}),
}


@pytest.mark.parametrize("name", list(IMAGE_IMAGE_CASES))
def test_image_image_gradients_equal_full_batch_in_fp64(name):
    from mmcl.losses.base import call_image_image

    model_kw, loss_kw = IMAGE_IMAGE_CASES[name]
    model, batch = make_image_image(**model_kw)
    torch.manual_seed(3)
    ref_fn = mmcl.create_loss(name, **loss_kw).double()
    loss_fn = mmcl.create_loss(name, **loss_kw).double()
    loss_fn.load_state_dict(ref_fn.state_dict())  # the same queue
    out = model(batch["images"], batch["images2"])
    dense = None if out.dense is None else (out.dense, out.dense2, out.feature_map, out.feature_map2)
    ref_loss = call_image_image(
        ref_fn, out.embeds, out.embeds2, out.logit_scale, labels=batch["label"], index=batch["index"], dense=dense
    )
    model.zero_grad()
    ref_loss.backward()
    ref = grads(model)
    model.zero_grad()
    loss = grad_cache_backward(model, loss_fn, split(batch, 3))
    got = grads(model)
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-12, atol=1e-12)
    assert got.keys() == ref.keys() and len(got) > 4
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-9, atol=1e-12, msg=key)
    for key, value in ref_fn.state_dict().items():  # stateful losses saw the whole batch once
        torch.testing.assert_close(loss_fn.state_dict()[key], value, msg=key)
