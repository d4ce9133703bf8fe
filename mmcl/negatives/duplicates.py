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

Captions are compared by the keys of :mod:`mmcl.data.captions` (normalised text, 64-bit hashes).
"""

from __future__ import annotations

import torch

from ..data.captions import caption_key, caption_keys, caption_words, normalise_caption

__all__ = ["caption_key", "caption_keys", "caption_words", "contained", "duplicate_pairs", "normalise_caption"]


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
