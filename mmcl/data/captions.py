"""Captions as keys: normalisation, a 64-bit key per caption and per word. The collate puts them in
each batch (``caption_key``, ``caption_words``) for losses that compare captions, and the
caption-edit sampler groups captions by them.

Normalisation: lower case, every run of characters other than letters and digits becomes one
space, and the ends are stripped, so ``"A red star."`` and ``"a red  star"`` share a key. A key is a
64-bit hash (BLAKE2b), the same in every process and on every machine.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=65536)
def _word_key(word: str) -> int:
    key = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little", signed=True)
    return key or 1  # 0 pads


def caption_words(texts: list[str], max_words: int = 64) -> torch.Tensor:
    """(N, max_words) int64: a 64-bit key per word of each normalised caption, 0-padded (what the
    collate puts in ``batch["caption_words"]``). A caption of more than ``max_words`` words gets the
    row ``[-1, 0, ...]``: it is compared with nothing (its own pair aside)."""
    rows = []
    for text in texts:
        words = normalise_caption(text).split()
        if len(words) > max_words:
            row = [-1]  # marks the row; a word's key is -1 with probability 2^-64
        else:
            row = [_word_key(w) for w in words]
        rows.append(row + [0] * (max_words - len(row)))
    return torch.tensor(rows, dtype=torch.long).reshape(len(texts), max_words)
