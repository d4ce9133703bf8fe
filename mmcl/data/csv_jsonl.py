"""Paired image-text datasets from CSV/TSV (open_clip's ``filepath``/``title`` layout) or JSONL.

One bad row never stops a run. :func:`read_table` reads every row it can and marks the others
(:class:`BadRow`, with a reason from ``SKIP_REASONS``):

- ``bad_encoding``: the row holds bytes that are not UTF-8. They are decoded with
  ``surrogateescape``, so reading never fails, and the row is marked rather than guessed at (a lone
  surrogate in a caption would also make the tokenizer raise).
- ``bad_row``: a JSONL line that is not a JSON object, or a CSV record the ``csv`` module rejects;
  the datasets below also mark a row without an image cell or whose label cell is not an integer.
- ``caption_too_long``: marked by the datasets below, which know the caption column.

The ``csv`` module's field size limit (131,072 characters by default) is lifted, so a huge cell is
read and then judged instead of raising ``_csv.Error``. A file in which no row can be used still
fails, with one line naming its first bad row.

Caption length policy: captions are truncated to the tokenizer's ``max_length`` tokens when they are
tokenised (:class:`~mmcl.data.tokenize.Tokenize`), so a long caption is trained on in part. A caption
cell longer than :data:`MAX_CAPTION_CHARS` characters (all the captions of the cell together) is not
a caption but a broken row, typically an unclosed quote that swallowed the lines after it: its row is
skipped and counted as ``caption_too_long``. The limit, 65,536 characters, is about 16,000 tokens:
far beyond any text tower's context (77 tokens for CLIP, a few hundred for long-caption models) and
well beyond the longest dense-caption datasets (a few thousand characters), while a fast tokenizer
still reads a cell that long in tens of milliseconds (a 10 MB cell costs seconds each time it is
drawn).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .pairs import ItemMaker, MapPairs, caption_list

MAX_CAPTION_CHARS = 65_536
"""A caption cell longer than this (characters, all its captions together) marks its row
``caption_too_long``."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class BadRow(dict):
    """A row that cannot be used, kept in its place so row numbers (dataset indices, resume
    positions, shards of the sampler) stay those of the file.

    Holds whatever fields could be read (none for a line that is not JSON); a field it lacks reads
    as None, so code that lists one column over all rows does not fail on it.

    Attributes:
        reason: why, a ``SKIP_REASONS`` entry.
        line: 1-based line of the file where the row starts (JSONL) or ends (CSV).
        detail: what was wrong, for messages.
    """

    def __init__(self, reason: str, line: int, fields: dict | None = None, detail: str = ""):
        super().__init__(fields or {})
        self.reason, self.line, self.detail = reason, line, detail or reason.replace("_", " ")

    def __missing__(self, key):
        return None


class Rows(list):
    """:func:`read_table`'s rows; ``skipped`` counts the bad rows per reason (also when they were
    dropped)."""

    skipped: Counter

    def __init__(self, rows=(), skipped: Counter | None = None):
        super().__init__(rows)
        self.skipped = Counter() if skipped is None else skipped


def has_surrogate(value) -> bool:
    """Whether a cell (a string, or lists/dicts of them) holds a lone surrogate: bytes that were not
    UTF-8 (decoded with ``surrogateescape``), or a ``\\udcxx`` escape in JSON."""
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def caption_chars(value) -> int:
    """Characters in a caption cell: a string, or a list of captions (summed)."""
    if value is None:
        return 0
    if isinstance(value, list):
        return sum(caption_chars(v) for v in value)
    return len(value) if isinstance(value, str) else len(str(value))


def _is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8: one fast pass that spares the row-by-row search for
    undecodable bytes in the usual case."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        try:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _lift_field_size_limit() -> None:
    # Process-wide and only ever raised: a cell of any size is read, then judged by its row's checks.
    limit = sys.maxsize
    while limit > csv.field_size_limit():
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than sys.maxsize (Windows)
            limit //= 2


def _read_jsonl(path: Path, rows: list) -> None:
    undecodable = not _is_utf8(path)
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                rows.append(BadRow("bad_row", n, detail=f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(value, dict):
                rows.append(BadRow("bad_row", n, detail=f"a JSON {type(value).__name__}, not an object"))
            elif ((undecodable and not line.isascii()) or "\\u" in line) and has_surrogate(value):
                rows.append(BadRow("bad_encoding", n, value, "bytes that are not UTF-8"))
            else:
                rows.append(value)


def _read_csv(path: Path, separator: str, rows: list) -> None:
    _lift_field_size_limit()
    undecodable = not _is_utf8(path)
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=separator)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ConfigError(f"{path}:1: the header cannot be read ({e})") from None
        if header is None:
            return
        width = len(header)
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # the reader starts afresh at the next record
                rows.append(BadRow("bad_row", reader.line_num, detail=str(e)))
                continue
            if not values:  # a blank line, skipped as csv.DictReader does
                continue
            # csv.DictReader's layout: surplus cells in a list under None, missing ones None
            row = dict(zip(header, values))
            if len(values) > width:
                row[None] = values[width:]
            else:
                row.update(dict.fromkeys(header[len(values) :]))
            if undecodable and has_surrogate(values):
                row = BadRow("bad_encoding", reader.line_num, row, "bytes that are not UTF-8")
            rows.append(row)


def read_table(path: str | os.PathLike, separator: str = ",", keep_bad: bool = False) -> Rows:
    """Rows of a CSV/TSV (by ``separator``) or JSONL (by extension ``.jsonl``) file, as dicts.

    A UTF-8 byte order mark is ignored. Rows that cannot be used (see the module docstring) are
    dropped, or with ``keep_bad`` kept in their place as :class:`BadRow`; either way the result's
    ``skipped`` counts them per reason.

    Raises:
        ConfigError: the file has bad rows and no usable one (say, a CSV read as JSONL).
    """
    path = Path(path)
    rows: list = []
    if path.suffix == ".jsonl":
        _read_jsonl(path, rows)
    else:
        _read_csv(path, separator, rows)
    bad = [r for r in rows if isinstance(r, BadRow)]
    if bad and len(bad) == len(rows):
        first = bad[0]
        raise ConfigError(f"{path}:{first.line}: no usable row in the file ({len(bad)} bad; the first: {first.detail})")
    skipped = Counter(r.reason for r in bad)
    return Rows(rows if keep_bad else [r for r in rows if not isinstance(r, BadRow)], skipped)


def row_problem(row: dict, caption_key: str | None, image_key: str | None = None) -> str | None:
    """Why a row of :func:`read_table` cannot be used (a ``SKIP_REASONS`` entry), or None: its own
    mark, no ``image_key`` cell at all (a JSONL object without the key, a CSV line with too few
    cells: ``bad_row``), or a caption cell over :data:`MAX_CAPTION_CHARS`."""
    if isinstance(row, BadRow):
        return row.reason
    if image_key is not None and row.get(image_key) is None:
        return "bad_row"
    if caption_key is not None and caption_chars(row.get(caption_key)) > MAX_CAPTION_CHARS:
        return "caption_too_long"
    return None


def check_columns(rows: list[dict], path, required: dict[str, str]) -> None:
    """Fail at start-up, naming the available columns, when a configured column is absent (the
    columns are those of the first usable row)."""
    first = next((r for r in rows if not isinstance(r, BadRow)), None)
    available = list(first.keys()) if first is not None else []
    for option, column in required.items():
        if column not in available:
            names = ", ".join(map(str, available))
            raise ConfigError(f"{path}: column {column!r} (set by {option}) not found; available columns: {names}")


def _label(row: dict, label_key: str | None) -> int | None:
    """The row's integer label; None when the cell is not one (the row is then a ``bad_row``)."""
    try:
        return int(row[label_key])
    except (TypeError, ValueError):
        return None


class PairedImageTextDataset(MapPairs):
    """Map-style dataset of (image, caption) pairs, opened lazily.

    A missing or corrupt image, an empty caption or a bad row of the file (bytes that are not UTF-8,
    a line that is not JSON, no image cell, a label that is not an integer, a caption cell over
    :data:`MAX_CAPTION_CHARS`; see the module docstring) does not stop a run: ``__getitem__``
    returns None with the reason, the collate drops it, and the trainer counts it (see
    ``SKIP_REASONS``). Bad rows keep their index, so epochs, resume positions and sharding are
    those of the file.

    Items: {"image": Tensor(3, H, W), "text": str, "index": int, "label": int}.

    Several captions per image: a JSONL caption may be a list, and with ``caption_separator`` a
    CSV cell holds several (``"a dog|a puppy"``). Each time an item is read one of them is
    picked, at random but seeded by (caption_seed, epoch, index): every caption is used over the
    epochs, and the choice is the same whatever the worker count and after a resume.

    Args:
        seed: with a random transform, seeds it per item from (seed, epoch, index), so augmentation
            is the same whatever the worker count and after a resume. None: the transform is
            deterministic and runs unseeded (faster).

    Attributes:
        bad_rows: {index: reason} of the rows that are skipped whatever their image. Their
            ``images`` entry is a placeholder unique to the row (no file has it), their captions
            empty.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable,
        image_key: str = "filepath",
        caption_key: str = "title",
        separator: str = ",",
        image_root: str | None = None,
        label_key: str | None = None,
        seed: int | None = None,
        max_items: int | None = None,
        caption_separator: str | None = None,
        caption_seed: int = 0,
        image2_key: str | None = None,
        need_caption: bool = True,
        negatives_key: str | None = None,
        negatives_fraction: float = 1.0,
    ):
        self.path = Path(path)
        rows = read_table(self.path, separator, keep_bad=True)
        if not rows:
            raise ConfigError(f"{self.path}: no rows")
        required = {"image_key": image_key}
        for option, column in (
            ("caption_key", caption_key if need_caption else None),
            ("label_key", label_key),
            ("image2_key", image2_key),
            ("negatives_key", negatives_key),
        ):
            if column is not None:
                required[option] = column
        check_columns(rows, self.path, required)
        rows = rows[:max_items] if max_items is not None else rows
        self.bad_rows: dict[int, str] = {}
        for i, r in enumerate(rows):
            reason = row_problem(r, caption_key if need_caption else None, image_key)
            if reason is None and label_key is not None and _label(r, label_key) is None:
                reason = "bad_row"
            if reason is not None:
                self.bad_rows[i] = reason
        bad = self.bad_rows
        self.root = Path(image_root) if image_root else self.path.parent
        # "\0" is in no file name: a bad row never shares an image path with a good one
        self.images = [f"\0bad row {i}" if i in bad else str(r[image_key]) for i, r in enumerate(rows)]
        self.images2 = [str(r.get(image2_key)) for r in rows] if image2_key is not None else None
        self.caption_lists = [
            [] if i in bad else caption_list(r.get(caption_key), caption_separator) for i, r in enumerate(rows)
        ]
        self.captions = [c[0] if c else "" for c in self.caption_lists]  # the first caption of each row
        self.labels = [-1 if i in bad else _label(r, label_key) for i, r in enumerate(rows)] if label_key else None
        self.rows = rows
        self.make = ItemMaker(transform, seed, caption_seed, need_caption)
        # hard-negative captions per row (NegCLIP-style training): a JSONL list, or a CSV cell split
        # on caption_separator; each read picks one, seeded like the caption
        self.negatives_fraction = negatives_fraction
        self.negative_lists = (
            [[] if i in bad else caption_list(r.get(negatives_key), caption_separator) for i, r in enumerate(rows)]
            if negatives_key
            else None
        )

    def __getitem__(self, index: int):
        reason = self.bad_rows.get(index)
        if reason is not None:
            return None, reason
        item = super().__getitem__(index)
        if self.negative_lists is None or not isinstance(item, dict):
            return item
        negatives = self.negative_lists[index]
        if not negatives:
            return None, "no_negative"
        carries = self.make.carries_negative(self.negatives_fraction, index, self.epoch)
        item["negative"] = self.make.negative(negatives, index, self.epoch) if carries else None
        return item

    def __len__(self) -> int:
        return len(self.images)

    def record(self, index: int):
        label = None if self.labels is None else self.labels[index]
        if self.images2 is not None:
            return self.root / self.images[index], self.caption_lists[index], label, self.root / self.images2[index]
        return self.root / self.images[index], self.caption_lists[index], label
