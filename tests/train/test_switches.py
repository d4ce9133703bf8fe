"""Each memory/speed switch runs, changes what it should, and keeps checkpoints resumable."""

import json

import pytest
import torch
from safetensors.torch import load_file

import mmcl
from mmcl.recipe import recipe_from_dict
from mmcl.train import latest_checkpoint
from mmcl.train.trainer import TrainingError

from ..conftest import TINY_BERT, tiny_recipe_dict

RESNET = {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]}, "image_size": 32}


def recipe(corpus, out, model=None, text=None, **train):
    d = tiny_recipe_dict(corpus, out, **{"checkpoint_every": 100, **train})
    d["eval"]["datasets"] = []
    d["model"]["text"]["config"] = {**TINY_BERT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    d["model"]["vision"] = {**d["model"]["vision"], **(model or {})}  # copies: TINY_VIT is shared
    d["model"]["text"] = {**d["model"]["text"], **(text or {})}
    return recipe_from_dict(d)


def losses(out):
    return [json.loads(x)["train/loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out):
    return load_file(str(latest_checkpoint(out) / "model.safetensors"))


def test_bf16_autocast_keeps_logits_and_loss_in_fp32(tiny_corpus, tmp_path):
    trainer = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", precision="bf16", steps=2))
    seen = []
    inner = trainer.loss_fn.forward

    def spy(img, txt, scale, bias=None):
        seen.append((img.dtype, txt.dtype, scale.dtype))
        loss = inner(img, txt, scale, bias)
        seen.append(loss.dtype)
        return loss

    trainer.loss_fn.forward = spy
    trainer.fit()
    assert seen[0] == (torch.float32, torch.float32, torch.float32) and seen[1] == torch.float32
    assert len(losses(tmp_path / "run")) == 2


def test_gradient_checkpointing_gives_the_same_training(tiny_corpus, tmp_path):
    plain = recipe(tiny_corpus, tmp_path / "a", steps=3)
    ckpt = recipe(
        tiny_corpus, tmp_path / "b", model={"grad_checkpointing": True}, text={"grad_checkpointing": True}, steps=3
    )
    t = mmcl.Trainer(ckpt)
    assert t.unwrapped.vision.trunk.grad_checkpointing
    assert t.unwrapped.text.transformer.is_activation_checkpointing
    t.fit()
    mmcl.Trainer(plain).fit()
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "b")), torch.tensor(losses(tmp_path / "a")))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


def test_channels_last_and_fused_adamw(tiny_corpus, tmp_path):
    base = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "a", model=RESNET, steps=3))
    base.fit()
    fast = mmcl.Trainer(
        recipe(tiny_corpus, tmp_path / "b", model=RESNET, steps=3, channels_last=True, fused_adamw=True)
    )
    conv = fast.unwrapped.vision.trunk.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.optimizer.optimizer.defaults["fused"] is True
    assert not base.optimizer.optimizer.defaults.get("fused")
    fast.fit()
    torch.testing.assert_close(
        torch.tensor(losses(tmp_path / "b")), torch.tensor(losses(tmp_path / "a")), rtol=1e-4, atol=1e-5
    )


def test_patch_dropout_only_while_training(tiny_corpus, tmp_path):
    t = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", model={"patch_dropout": 0.5}))
    vision = t.unwrapped.vision
    x = torch.randn(2, 3, 32, 32)
    vision.train()
    torch.manual_seed(0)
    a = vision(x)
    torch.manual_seed(1)
    b = vision(x)
    assert not torch.allclose(a, b)  # different patches dropped
    vision.eval()
    no_drop = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run2")).unwrapped.vision.eval()
    no_drop.load_state_dict(vision.state_dict())
    torch.testing.assert_close(vision(x), no_drop(x))
    with pytest.raises(mmcl.ConfigError, match="patch_dropout needs a ViT"):
        mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run3", model={**RESNET, "patch_dropout": 0.5}))


def test_locked_towers_get_no_gradient_no_decay_and_keep_their_statistics(tiny_corpus, tmp_path):
    r = recipe(
        tiny_corpus,
        tmp_path / "run",
        model={**RESNET, "lock": True, "unlocked_groups": 1},
        text={"lock": True},
        steps=4,
        checkpoint_every=2,
        stop_at_step=2,
    )
    t = mmcl.Trainer(r)
    model = t.unwrapped
    locked = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("vision.trunk.conv1") for n in locked)
    assert not any(n.startswith("vision.trunk.layer4") for n in locked)  # the last group is trained
    assert all(n in locked for n, _ in model.text.named_parameters(prefix="text"))
    assert not any(n.startswith(("image_proj", "text_proj", "logit")) for n in locked)
    in_optimizer = {id(p) for g in t.optimizer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for n, p in model.named_parameters() if n in locked)
    assert type(model.vision.trunk.bn1).__name__ == "FrozenBatchNorm2d"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t.fit()
    after = model.state_dict()
    for name in before:
        frozen = name.startswith(("vision.trunk.conv1", "vision.trunk.bn1", "text."))
        if frozen:
            assert torch.equal(before[name], after[name]), name  # weights and running statistics
    assert not torch.equal(before["image_proj.weight"], after["image_proj.weight"])
    assert all(p.grad is None for n, p in model.named_parameters() if n in locked)
    # the checkpoint resumes
    r2 = recipe(
        tiny_corpus,
        tmp_path / "run",
        model={**RESNET, "lock": True, "unlocked_groups": 1},
        text={"lock": True},
        steps=4,
        checkpoint_every=2,
        resume="latest",
    )
    mmcl.Trainer(r2).fit()
    assert latest_checkpoint(tmp_path / "run").name == "step-0000004"


def test_ema_of_weights_is_saved_resumed_and_used(tiny_corpus, tmp_path):
    straight = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "a", steps=4, ema_decay=0.5))
    straight.fit()
    assert (latest_checkpoint(tmp_path / "a") / "ema.safetensors").is_file()
    ema_a = {k: v.clone() for k, v in straight.ema.module.state_dict().items()}
    model_a = straight.unwrapped.state_dict()
    assert any(not torch.allclose(ema_a[k], model_a[k]) for k in model_a if model_a[k].is_floating_point())
    # evaluating the run later (mmcl eval RUN, load_run) uses the EMA too, as training's eval did
    loaded = mmcl.load_run(tmp_path / "a")[0].state_dict()
    raw = mmcl.load_run(tmp_path / "a", ema=False)[0].state_dict()
    for k in model_a:
        assert torch.equal(loaded[k], ema_a[k]) and torch.equal(raw[k], model_a[k]), k
    mmcl.Trainer(recipe(tiny_corpus, tmp_path / "b", steps=4, ema_decay=0.5, stop_at_step=2, checkpoint_every=2)).fit()
    resumed = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "b", steps=4, ema_decay=0.5, resume="latest"))
    resumed.fit()
    for k, v in resumed.ema.module.state_dict().items():
        torch.testing.assert_close(v, ema_a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_one_ema_step_is_the_decay_average(tiny_corpus, tmp_path):
    t = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", steps=1, ema_decay=0.9))
    start = {k: v.clone() for k, v in t.unwrapped.state_dict().items()}
    t.fit()
    new = t.unwrapped.state_dict()
    for k, v in t.ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * start[k] + 0.1 * new[k], msg=lambda m, k=k: f"{k}: {m}")


def test_non_finite_gradients_skip_the_step_then_stop_the_run(tiny_corpus, tmp_path):
    t = mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", steps=3, max_bad_steps=2))
    before = {k: v.clone() for k, v in t.unwrapped.state_dict().items()}
    param = t.unwrapped.image_proj.weight
    hook = param.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.raises(TrainingError, match="non-finite for 2 steps in a row.*max_bad_steps=2"):
        t.fit()
    hook.remove()
    after = t.unwrapped.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step was applied
    assert t.step == 0


def test_throughput_and_mfu_are_logged(tiny_corpus, tmp_path):
    mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", steps=2)).fit()
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train/samples_per_s"] > 0 and last["train/tflops_per_device"] > 0
    assert 0 < last["train/mfu"] < 1


def test_flop_count_matches_the_matmuls():
    """A linear model's forward + backward FLOPs are 6 x batch x in x out (2 forward, 4 backward)."""
    from mmcl.train.throughput import count_flops_per_sample

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(12, 8, bias=False)
            self.b = torch.nn.Linear(5, 8, bias=False)

        def forward(self, images, input_ids, attention_mask):
            from types import SimpleNamespace

            return SimpleNamespace(image_embeds=self.a(images), text_embeds=self.b(input_ids))

    batch = {"images": torch.randn(4, 12), "input_ids": torch.randn(4, 5), "attention_mask": torch.ones(4, 5)}
    # backward w.r.t. weights only (the inputs need no gradient): 2 forward + 2 backward
    assert count_flops_per_sample(Toy(), batch) == 4 * (12 * 8 + 5 * 8)


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tiny_corpus, tmp_path):
    mmcl.Trainer(recipe(tiny_corpus, tmp_path / "a", steps=3)).fit()
    mmcl.Trainer(recipe(tiny_corpus, tmp_path / "b", steps=3, compile=True)).fit()
    torch.testing.assert_close(
        torch.tensor(losses(tmp_path / "b")), torch.tensor(losses(tmp_path / "a")), rtol=1e-4, atol=1e-5
    )
    assert weights(tmp_path / "a").keys() == weights(tmp_path / "b").keys()


SWITCHES = {
    "grad_checkpointing": ({"grad_checkpointing": True}, {"grad_checkpointing": True}, {}),
    "channels_last+fused_adamw": (RESNET, None, {"channels_last": True, "fused_adamw": True}),
    "patch_dropout": ({"patch_dropout": 0.5}, None, {}),
    "lock": ({**RESNET, "lock": True, "unlocked_groups": 2}, {"lock": True, "unlocked_layers": 1}, {}),
    "ema": (None, None, {"ema_decay": 0.8}),
    "bf16": (None, None, {"precision": "bf16"}),
}


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_resumes_exactly(name, tiny_corpus, tmp_path):
    """4 steps straight == 2 steps, a stop, and a resume, with the switch on."""
    model, text, train = SWITCHES[name]

    def run(out, **extra):
        t = mmcl.Trainer(recipe(tiny_corpus, out, model=model, text=text, steps=4, **train, **extra))
        t.fit()
        return t

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at_step=2, checkpoint_every=2)
    resumed = run(tmp_path / "b", resume="latest")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    if straight.ema is not None:
        for k, v in resumed.ema.module.state_dict().items():
            torch.testing.assert_close(v, straight.ema.module.state_dict()[k], msg=k)
