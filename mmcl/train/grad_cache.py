"""Gradient accumulation that keeps full-batch negatives (GradCache; Gao et al. 2021, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup").

For k micro-batches:
  1. forward every micro-batch without grad and cache its embeddings (and the RNG state before it);
  2. compute the loss once on the concatenated embeddings, as one batch of k*B, and take its
     gradient w.r.t. the cached embeddings and the logit scale/bias;
  3. replay each micro-batch with grad under the same RNG state (so dropout and patch dropout draw
     the same masks) and back-propagate the cached embedding gradients through the towers.

The towers receive exactly the large-batch gradient. The logit scale receives its gradient once
(added on the last micro-batch), not k times. Buffers such as BatchNorm running statistics are
restored after step 1, so each micro-batch updates them once (BatchNorm still normalises each
micro-batch by its own statistics, so models with BatchNorm get the large batch's negatives but not
exactly its gradient). Under DDP, gradients are synchronised on the last micro-batch only.

Both model kinds are cached: image-text (image and text embeddings) and image-image (the two
branches' embeddings; with a dense head also its per-location outputs and backbone features). A
loss with state (MoCo's queue, DenseCL's step count, cluster banks) is called once per step, on the
whole batch, as without accumulation.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..losses.base import call_cross_modal, call_image_image
from .tower_cache import sample_keys

IMAGE_TEXT = ("image_embeds", "text_embeds")
IMAGE_IMAGE = ("embeds", "embeds2", "dense", "dense2", "feature_map", "feature_map2")


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _forward(model, b: dict):
    if "images2" in b:  # image-image: two views or two image modalities
        return model(b["images"], b["images2"])
    with sample_keys(b.get("index")):  # the locked-tower cache's keys (model.vision.cache_locked)
        return model(b["images"], b["input_ids"], b["attention_mask"])


def loss_inputs(out) -> dict[str, torch.Tensor]:
    """The model outputs the loss reads, by name (scale and bias apart)."""
    names = IMAGE_IMAGE if hasattr(out, "embeds2") else IMAGE_TEXT
    return {n: getattr(out, n) for n in names if getattr(out, n) is not None}


def _cat(micro_batches: list[dict], key: str) -> torch.Tensor | None:
    return torch.cat([b[key] for b in micro_batches]) if all(key in b for b in micro_batches) else None


def full_batch_loss(loss_fn, inputs: dict, scale, bias, micro_batches: list[dict]) -> torch.Tensor:
    """The loss of ``inputs`` (:func:`loss_inputs`, concatenated over ``micro_batches``), called as
    the trainer calls it without accumulation; image-image losses also get the batches' labels and ids."""
    if "embeds" not in inputs:
        return call_cross_modal(loss_fn, inputs["image_embeds"], inputs["text_embeds"], scale, bias)
    dense = tuple(inputs[n] for n in IMAGE_IMAGE[2:]) if "dense" in inputs else None
    return call_image_image(
        loss_fn,
        inputs["embeds"],
        inputs["embeds2"],
        scale,
        bias,
        labels=_cat(micro_batches, "label"),
        index=_cat(micro_batches, "index"),
        dense=dense,
    )


def grad_cache_backward(model, loss_fn, micro_batches: list[dict], accelerator=None) -> torch.Tensor | None:
    """Accumulate the gradient of ``loss_fn`` over the union of ``micro_batches`` into ``model``.

    Args:
        model: the (possibly DDP-wrapped) model: a dual encoder (``model(images, input_ids,
            attention_mask)`` returns a DualEncoderOutput) or an image encoder (``model(images,
            images2)`` returns an ImageEncoderOutput).
        loss_fn: any registered loss, called as the trainer calls it (``call_cross_modal`` or
            ``call_image_image``).
        micro_batches: dicts on the model's device with ``images`` and either ``input_ids`` and
            ``attention_mask`` or ``images2`` (image-image; ``label`` and ``index`` when present are
            passed on, as SupCon needs).
        accelerator: an Accelerator (for autocast, backward and no_sync), or None for plain torch.

    Returns:
        The detached full-batch loss, or None when it was not finite (no gradient was accumulated).
    """
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    inner = accelerator.unwrap_model(model) if accelerator is not None else model
    buffers = {name: buf.clone() for name, buf in inner.named_buffers()}

    states, cached = [], []
    with torch.no_grad():
        for b in micro_batches:
            states.append(_rng_state())
            with autocast():
                out = _forward(model, b)
            cached.append({n: _at_least_fp32(t) for n, t in loss_inputs(out).items()})
    with torch.no_grad():  # undo the running-statistics updates of the caching pass
        for name, buf in inner.named_buffers():
            buf.copy_(buffers[name])
    after_caching = _rng_state()

    inputs = {n: torch.cat([c[n] for c in cached]).requires_grad_() for n in cached[0]}
    scale = _at_least_fp32(out.logit_scale.detach()).requires_grad_()
    bias = _at_least_fp32(out.logit_bias.detach()).requires_grad_() if out.logit_bias is not None else None
    loss = full_batch_loss(loss_fn, inputs, scale, bias, micro_batches)
    finite = torch.isfinite(loss.detach()).float()
    if accelerator is not None:
        finite = accelerator.reduce(finite, reduction="sum") / accelerator.num_processes
    if finite.item() < 1:
        _set_rng_state(after_caching)
        return None
    names = list(inputs)
    leaves = [inputs[n] for n in names] + [scale] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # e.g. MoCo keys: no gradient
    g_inputs = dict(zip(names, grads[: len(names)]))
    g_scale = grads[len(names)]
    g_bias = grads[len(names) + 1] if bias is not None else None

    start = 0
    for i, b in enumerate(micro_batches):
        n = b["images"].shape[0]
        last = i == len(micro_batches) - 1
        sync = nullcontext() if last or accelerator is None else accelerator.no_sync(model)
        with sync:
            _set_rng_state(states[i])
            with autocast():
                out = _forward(model, b)
            surrogate = out.logit_scale.new_zeros((), dtype=torch.float32)
            for name, t in loss_inputs(out).items():
                if g_inputs[name] is not None and t.requires_grad:
                    surrogate = surrogate + (_at_least_fp32(t) * g_inputs[name][start : start + n]).sum()
            if last:  # the scale/bias gradient, once, through the wrapped forward so DDP averages it
                if g_scale is not None:
                    surrogate = surrogate + (_at_least_fp32(out.logit_scale) * g_scale).sum()
                if g_bias is not None:
                    surrogate = surrogate + (_at_least_fp32(out.logit_bias) * g_bias).sum()
            if accelerator is not None:
                accelerator.backward(surrogate)
            else:
                surrogate.backward()
        start += n
    return loss.detach()
