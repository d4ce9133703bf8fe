"""Collate: drop skipped samples (counting why), stack images, tokenise captions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from .captions import caption_keys, caption_words


class ImageTextCollate:
    """Batch of dataset items -> {"images", "input_ids", "attention_mask", "caption_key",
    "caption_words", "index", "skipped", "size"}.

    Items that are ``(None, reason)`` are dropped and counted in ``batch["skipped"]``. A second
    image per item (``image2``, paired modalities) or a two-view transform's pair of tensors
    gives ``batch["images2"]``; views that know their crop (``(tensor, box)``, a located two-view
    transform) also give ``batch["boxes"]`` and ``batch["boxes2"]``, (B, 4) each. Items with a
    hard-negative caption (``"negative"``) also give ``neg_input_ids`` / ``neg_attention_mask``,
    padded like the captions: one row per item whose ``"negative"`` is not None, in item order (zero
    rows when none has one). With ``tokenize=None`` (image-only training) no text is kept.
    """

    def __init__(self, tokenize: Callable[[list[str]], dict] | None):
        self.tokenize = tokenize

    def __call__(self, items: list) -> dict:
        skipped = Counter(item[1] for item in items if isinstance(item, tuple))
        items = [item for item in items if isinstance(item, dict)]
        batch: dict = {"skipped": dict(skipped), "size": len(items)}
        if not items:
            return batch
        first = items[0]["image"]
        if isinstance(first, (list, tuple)):  # views of one image (SimCLR-style two-view transform)
            if isinstance(first[0], tuple):  # located views: (tensor, crop box) each
                batch["boxes"] = torch.stack([it["image"][0][1] for it in items])
                batch["boxes2"] = torch.stack([it["image"][1][1] for it in items])
                items = [{**it, "image": [view[0] for view in it["image"]]} for it in items]
            batch["images"] = torch.stack([it["image"][0] for it in items])
            batch["images2"] = torch.stack([it["image"][1] for it in items])
        else:
            batch["images"] = torch.stack([it["image"] for it in items])
        if "image2" in items[0]:
            batch["images2"] = torch.stack([it["image2"] for it in items])
        if self.tokenize is not None and "negative" in items[0]:
            # captions and their hard negatives in one call: one padded length for both. A row
            # without one this step (data.negatives_fraction < 1) has None; there may be none at all
            n = len(items)
            negatives = [it["negative"] for it in items if it["negative"] is not None]
            tokens = self.tokenize([it["text"] for it in items] + negatives)
            batch["input_ids"], batch["neg_input_ids"] = tokens["input_ids"][:n], tokens["input_ids"][n:]
            batch["attention_mask"], batch["neg_attention_mask"] = (
                tokens["attention_mask"][:n],
                tokens["attention_mask"][n:],
            )
        elif self.tokenize is not None:
            batch.update(self.tokenize([it["text"] for it in items]))
        if self.tokenize is not None:  # duplicate / contained captions (cluster_infonce duplicate_captions)
            texts = [it["text"] for it in items]
            batch["caption_key"], batch["caption_words"] = caption_keys(texts), caption_words(texts)
        batch["index"] = torch.tensor([it["index"] for it in items])
        if any("label" in it for it in items):
            batch["label"] = torch.tensor([it.get("label", -1) for it in items])
        return batch
