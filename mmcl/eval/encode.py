"""Stream a dataset through a model adapter into cached features."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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


def _as_list(items):
    return items


def encode_dataset(
    adapter,
    data: EvalDataset,
    batch_size: int = 64,
    num_workers: int = 0,
    texts: bool = True,
    progress: bool = True,
) -> Encoded:
    """Encode every image (and, with ``texts``, every caption) of ``data``.

    Unreadable items are skipped and counted by reason; with ``texts``, an image without any
    caption is skipped as ``empty_caption`` (retrieval needs one per image).
    """
    data.source.transform = adapter.preprocess
    loader = torch.utils.data.DataLoader(
        data.source, batch_size=batch_size, num_workers=num_workers, collate_fn=_as_list
    )
    total = len(data.source) if hasattr(data.source, "__len__") else None
    image_feats, text_feats, labels, t2i, captions = [], [], [], [], []
    skipped: Counter = Counter()
    n_images = 0
    bar = tqdm(total=total, desc=f"{data.name}: encoding", disable=not progress, unit="img", leave=False)
    for items in loader:
        bar.update(len(items))
        good = []
        for it in items:
            if isinstance(it, tuple):
                skipped[it[1]] += 1
            elif texts and not it["captions"]:
                skipped["empty_caption"] += 1
            else:
                good.append(it)
        if not good:
            continue
        image_feats.append(adapter.encode_image(torch.stack([it["image"] for it in good])).cpu())
        labels.extend(int(it["label"]) for it in good)
        if texts:
            batch_captions = [c for it in good for c in it["captions"]]
            t2i.extend(n_images + i for i, it in enumerate(good) for _ in it["captions"])
            captions.extend(batch_captions)
            text_feats.append(
                torch.cat(
                    [
                        adapter.encode_text(batch_captions[s : s + batch_size]).cpu()
                        for s in range(0, len(batch_captions), batch_size)
                    ]
                )
            )
        n_images += len(good)
    bar.close()
    if not image_feats:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "the dataset is empty"
        raise ConfigError(f"{data.name}: no readable items ({reasons})")
    return Encoded(
        image_features=torch.cat(image_feats),
        labels=torch.tensor(labels),
        text_features=torch.cat(text_feats) if texts else None,
        text_to_image=torch.tensor(t2i) if texts else None,
        captions=captions if texts else None,
        skipped=dict(skipped),
    )
