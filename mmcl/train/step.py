"""The forward pass of a training step: the towers on a batch, then the loss in fp32."""

from __future__ import annotations

import torch

from ..errors import TrainingError
from ..losses.base import call_cross_modal
from .grad_cache import full_batch_loss, loss_inputs
from .tower_cache import sample_keys


def image_text_forward(model, batch: dict, negatives_grad: bool = True, encode_text=None):
    """The towers on an image-text batch: ``(output, caption embeddings, negative embeddings or
    None)``. Hard-negative captions (``neg_input_ids``) share the captions' text pass, or, with
    ``negatives_grad`` false, get a second pass of ``encode_text`` (the unwrapped model's) without
    gradient, in the same train mode. A step may carry no negatives at all."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if "neg_input_ids" not in batch:
        out = model(batch["images"], ids, mask)
        return out, out.text_embeds, None
    neg_ids, neg_mask = batch["neg_input_ids"], batch["neg_attention_mask"]
    if negatives_grad:
        out = model(batch["images"], torch.cat([ids, neg_ids]), torch.cat([mask, neg_mask]))
        n = ids.shape[0]
        return out, out.text_embeds[:n], out.text_embeds[n:]
    out = model(batch["images"], ids, mask)
    if neg_ids.shape[0] == 0:
        return out, out.text_embeds, out.text_embeds.new_zeros(0, out.text_embeds.shape[1])
    with torch.no_grad():
        return out, out.text_embeds, (encode_text or model.encode_text)(neg_ids, neg_mask)


def batch_loss(model, loss_fn, batch: dict, image_image: bool, negatives_grad: bool, encode_text, autocast, name=""):
    """The loss of one batch: image-text (with any hard-negative captions in the same text pass)
    or image-image (two views, or two image modalities). Towers under ``autocast``, loss in fp32."""
    with autocast(), sample_keys(batch.get("index")):  # the locked-tower cache's keys (model.vision.cache_locked)
        if image_image:
            out = model(batch["images"], batch["images2"])
        else:
            out, text, negatives = image_text_forward(model, batch, negatives_grad, encode_text)
    bias = out.logit_bias.float() if out.logit_bias is not None else None
    if image_image:
        inputs = {n: t.float() for n, t in loss_inputs(out).items()}
        try:
            return full_batch_loss(loss_fn, inputs, out.logit_scale.float(), bias, [batch])
        except ValueError as e:
            raise TrainingError(f"loss {name}: {e}") from None
    extra = {} if negatives is None else {"text_negatives": negatives.float()}
    return call_cross_modal(loss_fn, out.image_embeds.float(), text.float(), out.logit_scale.float(), bias, **extra)
