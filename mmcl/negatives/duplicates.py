"""Certain false negatives: captions that say the same thing.

If caption j, normalised, equals caption i, then caption j describes image i exactly as well as
caption i does, so the in-batch pair (image i, caption j) is a false negative, whatever the model
has learnt so far. Unlike cluster membership this needs no warm-up and is never wrong; it finds only
the duplicates, not the paraphrases. Data with short or templated captions ("a red circle", product
titles, class-name captions) has many of them.

Normalisation: lower case, every run of characters other than letters and digits becomes one
space, and the ends are stripped, so ``"A red star."`` and ``"a red  star"`` share a key. A key is a
64-bit hash (BLAKE2b), the same in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import re

import torch

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise_caption(text: str) -> str:
    """The caption as duplicates are compared: lower case, words of letters and digits, single spaces."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def caption_key(text: str) -> int:
    """A signed 64-bit key of the normalised caption; equal captions get equal keys."""
    digest = hashlib.blake2b(normalise_caption(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def caption_keys(texts: list[str]) -> torch.Tensor:
    """(N,) int64 keys of ``texts`` (what the collate puts in ``batch["caption_key"]``)."""
    return torch.tensor([caption_key(t) for t in texts], dtype=torch.long)


def duplicate_pairs(row_keys: torch.Tensor, col_keys: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """(rows x columns) bool: the two samples' captions are duplicates and the pair is not the positive."""
    return (row_keys[:, None] == col_keys[None, :]) & ~positives
