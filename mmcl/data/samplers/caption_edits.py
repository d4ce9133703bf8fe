"""Minimal-edit batches: put each caption next to a training caption that differs from it by a
minimal edit, so that compositional hard negatives meet in the same batch, each with its own image.

This is the batch-composition route to NegCLIP-style negatives. Extra caption columns
(``data.negatives_key``) cost a second text-tower pass per step; here the partner is an ordinary
row of the batch, so a step costs what a plain step costs, and the partner's image is a hard
negative for the caption as well (both retrieval directions get one).

Partners are found once, from the captions alone (normalised as for ``duplicate_captions``); two
rows are partners when their captions are different texts related by one of the ``edits``:

- ``reorder``: the same words in another order ("a red circle left of a blue square" and
  "a blue square left of a red circle");
- ``replace``: the same words but one, in the same places ("a red circle left of a blue square"
  and "a red circle right of a blue square").

Every epoch pairs the partners afresh (seeded by ``(seed, epoch)``): rows are visited in random
order, and an unpaired row takes an unpaired partner from one of its edit groups, picked at random.
Each pair is placed side by side and pairs and single rows are shuffled together. As with
:class:`mmcl.negatives.ClusterBatchSampler`, only the order of the epoch changes: batches are
contiguous slices cut by :class:`mmcl.data.sampler.ResumableBatchSampler`, so ranks take disjoint
blocks of each global batch, the epoch is covered once, and resume is exact. A pair falls across a
global-batch boundary with probability about 1 / (global batch).

A minimal edit does not always change the meaning ("at the top, a red star" and "a red star at the
top"; "a photo of" and "a picture of"). Such partners are false negatives that a policy for likely
false negatives (``loss.kwargs.caption_match: contained``) does not catch; the evidence benchmark
(docs/negatives.md) measures the net effect.
"""

from __future__ import annotations

import random
from collections import defaultdict

from ...errors import ConfigError
from ..captions import normalise_caption
from .base import ResumableBatchSampler

EDITS = ("reorder", "replace")


def partner_groups(captions: list[str], edits: tuple[str, ...] = EDITS) -> list[list[int]]:
    """Groups of rows whose captions are related by one of ``edits``: rows sharing an edit key
    (the sorted words for ``reorder``; the words with one place blanked for ``replace``). Only
    groups holding at least two different texts are kept."""
    return _groups([tuple(normalise_caption(c).split()) for c in captions], edits)


def _groups(words_of_rows: list[tuple[str, ...]], edits: tuple[str, ...]) -> list[list[int]]:
    """:func:`partner_groups` on captions already normalised and split into words."""
    unknown = sorted(set(edits) - set(EDITS))
    if unknown or not edits:
        raise ValueError(f"edits must be a non-empty list of {', '.join(EDITS)} (got {list(edits)})")
    by_key: dict[tuple, list[int]] = defaultdict(list)
    texts: dict[tuple, set[tuple[str, ...]]] = defaultdict(set)
    for i, words in enumerate(words_of_rows):
        if len(words) < 2:
            continue
        keys = [("reorder", *sorted(words))] if "reorder" in edits else []
        if "replace" in edits:
            keys += [("replace", *words[:p], None, *words[p + 1 :]) for p in range(len(words))]
        for key in keys:
            by_key[key].append(i)
            texts[key].add(words)
    return [rows for key, rows in by_key.items() if len(texts[key]) > 1]


class CaptionEditBatchSampler(ResumableBatchSampler):
    """:class:`ResumableBatchSampler` whose epoch order puts minimal-edit partners side by side.

    Args:
        captions: one caption per dataset row (the row's first caption).
        batch_size, rank, world_size, seed: as for ``ResumableBatchSampler``.
        fraction: the share of the rows that look for a partner each epoch, in (0, 1].
        edits: which minimal edits make partners, any of ``reorder`` and ``replace``.
    """

    @classmethod
    def check(cls, data, kind: str) -> None:
        bad = sorted(set(data.sampler_kwargs) - {"fraction", "edits"})
        if bad:
            raise ConfigError(
                f"data.sampler_kwargs: unknown {bad} for data.sampler: caption_edits; valid keys: edits, fraction"
            )
        fraction = data.sampler_kwargs.get("fraction", 1.0)
        if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1):
            raise ConfigError(f"data.sampler_kwargs.fraction must be a number in (0, 1] (got {fraction!r})")
        edits = data.sampler_kwargs.get("edits", list(EDITS))
        if not (isinstance(edits, list) and edits and all(e in EDITS for e in edits)):
            raise ConfigError(
                f"data.sampler_kwargs.edits must be a non-empty list of {', '.join(EDITS)} (got {edits!r})"
            )
        if kind != "image_text":
            raise ConfigError(f"data.sampler: caption_edits pairs captions; model.kind is {kind!r}")

    @classmethod
    def from_config(cls, data, dataset, rank: int, world_size: int, seed: int):
        captions = getattr(dataset, "captions", None)
        if captions is None:
            raise ConfigError(
                f"data.sampler: caption_edits pairs the captions of a CSV/JSONL file; {data.train} is another "
                "source; valid choices for it: random, clusters"
            )
        return cls(captions, data.batch_size, rank, world_size, seed=seed, **data.sampler_kwargs)

    def __init__(
        self,
        captions: list[str],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        fraction: float = 1.0,
        edits: tuple[str, ...] | list[str] = EDITS,
    ):
        super().__init__(len(captions), batch_size, rank, world_size, seed, shuffle=True)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction, self.edits = fraction, tuple(edits)
        self.text = [tuple(normalise_caption(c).split()) for c in captions]  # compared, never shown
        self.groups = _groups(self.text, self.edits)
        self.row_groups: list[list[int]] = [[] for _ in captions]
        for gid, rows in enumerate(self.groups):
            for row in rows:
                self.row_groups[row].append(gid)
        self.rows_with_partner = sum(1 for gids in self.row_groups if gids)

    def pairs(self, rng: random.Random, window: int = 8) -> list[tuple[int, int]]:
        """This epoch's pairs. Each group is a shuffled queue; a row looks at the next ``window``
        rows of a group's queue for an unpaired one with another text before it tries its next group."""
        queues = [rng.sample(rows, len(rows)) for rows in self.groups]
        heads = [0] * len(queues)
        paired = [False] * self.num_samples
        out = []
        visit = rng.sample(range(self.num_samples), self.num_samples)
        for row in visit:
            if paired[row] or not self.row_groups[row] or (self.fraction < 1.0 and rng.random() >= self.fraction):
                continue
            gids = self.row_groups[row]
            start = rng.randrange(len(gids))
            for gid in gids[start:] + gids[:start]:
                queue = queues[gid]
                while heads[gid] < len(queue) and paired[queue[heads[gid]]]:
                    heads[gid] += 1  # drop rows paired elsewhere from the front of the queue
                partner = None
                for candidate in queue[heads[gid] : heads[gid] + window]:
                    if not paired[candidate] and self.text[candidate] != self.text[row]:
                        partner = candidate
                        break
                if partner is not None:
                    paired[row] = paired[partner] = True
                    out.append((row, partner))
                    break
        return out

    def epoch_order(self) -> list[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        pairs = self.pairs(rng)
        paired = {i for p in pairs for i in p}
        units: list[tuple[int, ...]] = list(pairs)
        units += [(i,) for i in range(self.num_samples) if i not in paired]
        rng.shuffle(units)
        return [i for unit in units for i in unit]
