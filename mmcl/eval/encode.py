"""Stream a dataset through a model adapter into cached features: the one encoder of every
evaluation task, whether a recipe or ``mmcl eval`` runs it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from ..data.evalsets import EvalDataset
from ..errors import ConfigError


@dataclass
class Encoded:
    """Features of the readable items, in dataset order (per worker shard order for WebDataset)."""

    image_features: torch.Tensor  # (N_img, D), L2-normalised
    labels: torch.Tensor  # (N_img,), -1 where unknown
    text_features: torch.Tensor | None = None  # (N_txt, D)
    text_to_image: torch.Tensor | None = None  # (N_txt,)
    captions: list[str] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    # with a group column (attribute-level recall): the group of each image and of each caption
    image_groups: list[str] | None = None
    text_groups: list[str] | None = None
    # encoded with keep_uncaptioned: which images have a caption (None: all of them)
    captioned: torch.Tensor | None = None

    def with_captions(self) -> Encoded:
        """Only the images with at least one caption (what retrieval scores), the others counted as
        ``empty_caption``: the same as encoding without ``keep_uncaptioned``, bar batch composition."""
        if self.captioned is None or bool(self.captioned.all()):
            return replace(self, captioned=None)
        keep = self.captioned
        new_index = torch.cumsum(keep.long(), 0) - 1
        skipped = dict(self.skipped)
        skipped["empty_caption"] = skipped.get("empty_caption", 0) + int((~keep).sum())
        groups = self.image_groups
        return replace(
            self,
            image_features=self.image_features[keep],
            labels=self.labels[keep],
            text_to_image=new_index[self.text_to_image],
            skipped=skipped,
            image_groups=None if groups is None else [g for g, k in zip(groups, keep.tolist()) if k],
            captioned=None,
        )


def _as_list(items):
    return items


class _Collector:
    """Accumulates one batch of items at a time (features, labels, captions, groups, skips)."""

    def __init__(self, adapter, texts: bool, keep_uncaptioned: bool, batch_size: int):
        self.adapter, self.texts, self.keep, self.batch_size = adapter, texts, keep_uncaptioned, batch_size
        self.image_feats, self.text_feats, self.labels, self.t2i, self.captions = [], [], [], [], []
        self.image_groups, self.text_groups, self.captioned = [], [], []
        self.skipped: Counter = Counter()
        self.n_images = 0

    def add(self, items) -> None:
        good = []
        for it in items:
            if isinstance(it, tuple):
                self.skipped[it[1]] += 1
            elif self.texts and not it["captions"] and not self.keep:
                self.skipped["empty_caption"] += 1
            else:
                good.append(it)
        if not good:
            return
        self.image_feats.append(self.adapter.encode_image(torch.stack([it["image"] for it in good])).cpu())
        self.labels.extend(int(it["label"]) for it in good)
        if "group" in good[0]:
            self.image_groups.extend(it["group"] for it in good)
            self.text_groups.extend(g for it in good for g in it["caption_groups"])
        if self.texts:
            # the captions of a batch of images are encoded together, as CLIP_benchmark does
            batch_captions = [c for it in good for c in it["captions"]]
            self.t2i.extend(self.n_images + i for i, it in enumerate(good) for _ in it["captions"])
            self.captions.extend(batch_captions)
            self.captioned.extend(bool(it["captions"]) for it in good)
            size = self.batch_size
            if batch_captions:
                self.text_feats.append(
                    torch.cat(
                        [
                            self.adapter.encode_text(batch_captions[s : s + size]).cpu()
                            for s in range(0, len(batch_captions), size)
                        ]
                    )
                )
        self.n_images += len(good)

    def result(self) -> Encoded:
        texts = self.texts
        text_features = None
        if texts:  # no caption at all (keep_uncaptioned): an empty (0, D) matrix
            dim = self.image_feats[0].shape[1]
            text_features = torch.cat(self.text_feats) if self.text_feats else torch.zeros(0, dim)
        return Encoded(
            image_features=torch.cat(self.image_feats),
            labels=torch.tensor(self.labels),
            text_features=text_features,
            text_to_image=torch.tensor(self.t2i, dtype=torch.long) if texts else None,
            captions=self.captions if texts else None,
            skipped=dict(self.skipped),
            image_groups=self.image_groups or None,
            text_groups=(self.text_groups or None) if texts else None,
            captioned=torch.tensor(self.captioned) if texts and self.keep else None,
        )


def encode_dataset(
    adapter,
    data: EvalDataset,
    batch_size: int = 64,
    num_workers: int = 0,
    texts: bool = True,
    progress: bool = True,
    keep_uncaptioned: bool = False,
) -> Encoded:
    """Encode every image (and, with ``texts``, every caption) of ``data``.

    Unreadable items are skipped and counted by reason; with ``texts``, an image without any
    caption is skipped as ``empty_caption`` (retrieval needs one per image), unless
    ``keep_uncaptioned``: then it is encoded, and :meth:`Encoded.with_captions` leaves it out
    (a dataset encoded once for zero-shot classification and retrieval).
    """
    data.source.transform = adapter.preprocess
    loader = torch.utils.data.DataLoader(
        data.source, batch_size=batch_size, num_workers=num_workers, collate_fn=_as_list
    )
    total = len(data.source) if hasattr(data.source, "__len__") else None
    collector = _Collector(adapter, texts, keep_uncaptioned, batch_size)
    bar = tqdm(total=total, desc=f"{data.name}: encoding", disable=not progress, unit="img", leave=False)
    for items in loader:
        bar.update(len(items))
        collector.add(items)
    bar.close()
    if not collector.image_feats:
        reasons = ", ".join(f"{k}: {v}" for k, v in collector.skipped.items()) or "the dataset is empty"
        raise ConfigError(f"{data.name}: no readable items ({reasons})")
    return collector.result()
