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
restored after step 1, so each micro-batch updates them once. Under DDP, gradients are
synchronised on the last micro-batch only.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..losses.base import call_cross_modal


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def grad_cache_backward(model, loss_fn, micro_batches: list[dict], accelerator=None) -> torch.Tensor | None:
    """Accumulate the gradient of ``loss_fn`` over the union of ``micro_batches`` into ``model``.

    Args:
        model: the (possibly DDP-wrapped) dual encoder; ``model(images, input_ids, attention_mask)``
            returns a DualEncoderOutput.
        loss_fn: a cross-modal loss ``(image_features, text_features, logit_scale, logit_bias)``.
        micro_batches: dicts with ``images``, ``input_ids``, ``attention_mask`` on the model's device.
        accelerator: an Accelerator (for autocast, backward and no_sync), or None for plain torch.

    Returns:
        The detached full-batch loss, or None when it was not finite (no gradient was accumulated).
    """
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    inner = accelerator.unwrap_model(model) if accelerator is not None else model
    buffers = {name: buf.clone() for name, buf in inner.named_buffers()}

    states, images, texts = [], [], []
    with torch.no_grad():
        for b in micro_batches:
            states.append(_rng_state())
            with autocast():
                out = model(b["images"], b["input_ids"], b["attention_mask"])
            images.append(_at_least_fp32(out.image_embeds))
            texts.append(_at_least_fp32(out.text_embeds))
    with torch.no_grad():  # undo the running-statistics updates of the caching pass
        for name, buf in inner.named_buffers():
            buf.copy_(buffers[name])
    after_caching = _rng_state()

    img = torch.cat(images).requires_grad_()
    txt = torch.cat(texts).requires_grad_()
    scale = _at_least_fp32(out.logit_scale.detach()).requires_grad_()
    bias = _at_least_fp32(out.logit_bias.detach()).requires_grad_() if out.logit_bias is not None else None
    loss = call_cross_modal(loss_fn, img, txt, scale, bias)
    finite = torch.isfinite(loss.detach()).float()
    if accelerator is not None:
        finite = accelerator.reduce(finite, reduction="sum") / accelerator.num_processes
    if finite.item() < 1:
        _set_rng_state(after_caching)
        return None
    leaves = [img, txt, scale] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(loss, leaves)
    g_img, g_txt, g_scale = grads[:3]
    g_bias = grads[3] if bias is not None else None

    start = 0
    for i, b in enumerate(micro_batches):
        n = b["images"].shape[0]
        last = i == len(micro_batches) - 1
        sync = nullcontext() if last or accelerator is None else accelerator.no_sync(model)
        with sync:
            _set_rng_state(states[i])
            with autocast():
                out = model(b["images"], b["input_ids"], b["attention_mask"])
            surrogate = (_at_least_fp32(out.image_embeds) * g_img[start : start + n]).sum()
            surrogate = surrogate + (_at_least_fp32(out.text_embeds) * g_txt[start : start + n]).sum()
            if last:  # the scale/bias gradient, once, through the wrapped forward so DDP averages it
                surrogate = surrogate + (_at_least_fp32(out.logit_scale) * g_scale).sum()
                if g_bias is not None:
                    surrogate = surrogate + (_at_least_fp32(out.logit_bias) * g_bias).sum()
            if accelerator is not None:
                accelerator.backward(surrogate)
            else:
                surrogate.backward()
        start += n
    return loss.detach()
