"""Certain false negatives: captions that say the same thing.

If caption j, normalised, equals caption i, then caption j describes image i exactly as well as
caption i does, so the in-batch pair (image i, caption j) is a false negative, whatever the model
has learnt so far. Unlike cluster membership this needs no warm-up and is never wrong; it finds only
the duplicates, not the paraphrases. Data with short or templated captions ("a red circle", product
titles, class-name captions) has many of them.

Contained captions go one step further. If every word of caption j appears in caption i, in the same
order ("a red circle" within "a small red circle at the top left"), caption j is a less specific
description of image i, so (image i, caption j) is very likely a false negative too. The relation is
one-way: "a small red circle at the top left" is not true of every image captioned "a red circle".
It is a heuristic: a short caption is also contained in a longer one that mentions its words about
another object ("a red circle" in "a blue square above a red circle").

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


def contained(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(R, C) bool from (R, L) and (C, L) :func:`caption_words`: every word of caption ``cols[c]``
    appears in caption ``rows[r]`` in the same order (an ordered subsequence; equal captions
    included). Empty captions are contained in nothing. Greedy matching, one pass over the row
    captions' words, vectorised over all R x C pairs."""
    lengths = (cols != 0).sum(1)
    too_long = cols[:, 0] == -1
    width = int((rows != 0).sum(1).max()) if rows.numel() else 0  # the longest row caption
    # a 0 after each column caption: once a caption is matched its pointer rests on a pad, and pads never match
    padded = torch.cat([cols, cols.new_zeros(cols.shape[0], 1)], 1)
    pointer = torch.zeros(rows.shape[0], cols.shape[0], dtype=torch.long, device=rows.device)
    col_index = torch.arange(cols.shape[0], device=rows.device)[None, :]
    for t in range(width):
        word = rows[:, t : t + 1]
        pointer += (padded[col_index, pointer] == word) & (word != 0)
    return (pointer == lengths[None, :]) & (lengths > 0)[None, :] & ~too_long[None, :]


def duplicate_pairs(row_keys: torch.Tensor, col_keys: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """(rows x columns) bool: the two samples' captions are duplicates and the pair is not the positive."""
    return (row_keys[:, None] == col_keys[None, :]) & ~positives
