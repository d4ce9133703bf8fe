"""WebDataset shards (img2dataset's layout) read with ``tarfile``.

A sample is the tar members sharing a key (the member name up to its first dot):
``000123.jpg`` + ``000123.txt`` + ``000123.json``. Shards are named by a brace pattern
(``cc3m/{00000..00331}.tar``), a list file (``.txt``/``.list``, one path per line) or one path.

This module reads records; :mod:`mmcl.data.stream` splits shards across ranks and workers,
shuffles, batches and tracks the read position for resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

# Errors that mean "this shard cannot be read (any further)".
SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)
DEFAULT_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
COMPRESSED = (".gz", ".tgz", ".bz2", ".xz")


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard paths from a brace pattern (``data/{000..009}.tar``), a list file, one path, or a
    list of any of those. A list file's relative paths are relative to the list file."""
    from braceexpand import braceexpand

    if isinstance(spec, (list, tuple)):
        return [s for one in spec for s in expand_shards(one)]
    if spec.endswith((".txt", ".list")) and Path(spec).is_file():
        base = Path(spec).parent
        lines = [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
        return [line if os.path.isabs(line) else str(base / line) for line in lines]
    return list(braceexpand(spec))


def iter_tar_records(path: str, skip: int = 0) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` per sample of one shard, in file order.

    The first ``skip`` samples are passed over without reading their data (resume). Raises one of
    ``SHARD_ERRORS`` when the file is not a readable tar, or breaks part-way; a plain tar cut off
    at a member boundary (no end-of-archive blocks) counts as broken and its last, possibly
    incomplete, sample is not yielded.
    """
    with tarfile.open(path) as tar:
        current, fields, n = None, {}, 0
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            if base.startswith("."):
                continue
            stem, _, ext = base.partition(".")
            key = os.path.join(os.path.dirname(member.name), stem)
            if key != current:
                if current is not None:
                    if n >= skip:
                        yield current, fields
                    n += 1
                current, fields = key, {}
            if n >= skip:
                fields[ext.lower()] = tar.extractfile(member).read()
        if not str(path).endswith(COMPRESSED) and os.path.getsize(path) - tar.offset < 1024:
            raise tarfile.ReadError(f"{path}: truncated (no end-of-archive marker)")
        if current is not None and n >= skip:
            yield current, fields


def record_uid(shard: str, key: str, source: int = 0) -> int:
    """A stable 63-bit id for a sample: its ``index`` in batches, and the seed of its augmentation.
    Made of the source's position in ``data.train``, the shard's file name and the sample key, so
    two sources with img2dataset's identical shard names do not collide, and moving the data does
    not change it."""
    digest = hashlib.blake2b(f"{source}/{os.path.basename(shard)}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class WdsFields:
    """Picks the image, captions and label out of a sample's members.

    Args:
        image_key: the image member's extension, or several separated by ``;`` (first present wins).
            Default: any of jpg/jpeg/png/webp.
        caption_key: ``txt`` (every non-empty line is a caption), another extension, or
            ``json:<field>`` for a field of the ``.json`` member (a string or a list).
        label_key: extension of an integer label member (``cls``), optional.
        image2_key: extension of the paired image of a two-modality sample (``depth.png``), optional.
    """

    def __init__(
        self,
        image_key: str | None = None,
        caption_key: str | None = "txt",
        label_key: str | None = None,
        image2_key: str | None = None,
    ):
        self.image_exts = tuple(image_key.split(";")) if image_key else DEFAULT_IMAGE_EXTS
        self.caption_key, self.label_key, self.image2_key = caption_key, label_key, image2_key

    def captions(self, fields: dict[str, bytes]) -> list[str]:
        key = self.caption_key
        if key is None:
            return []
        if key.startswith("json:"):
            raw = fields.get("json")
            if raw is None:
                return []
            try:
                value = json.loads(raw).get(key[5:])
            except (ValueError, AttributeError):
                return []
            values = value if isinstance(value, list) else [value]
            return [str(v).strip() for v in values if v is not None and str(v).strip()]
        raw = fields.get(key)
        if raw is None:
            return []
        return [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]

    def __call__(self, fields: dict[str, bytes]):
        """``(image file object or None, captions, label or None, image2 file object or None)``."""
        raw = next((fields[e] for e in self.image_exts if e in fields), None)
        label = None
        if self.label_key is not None and self.label_key in fields:
            try:
                label = int(fields[self.label_key].decode().strip())
            except ValueError:
                label = None
        raw2 = fields.get(self.image2_key) if self.image2_key else None
        image2 = io.BytesIO(raw2) if raw2 is not None else None
        return (io.BytesIO(raw) if raw is not None else None), self.captions(fields), label, image2

    def check(self, shards: list[str], what: str = "data.train") -> None:
        """Fail at start-up when the first readable sample of ``shards`` (one source) lacks the
        configured members."""
        for shard in shards[:8]:
            try:
                key, fields = next(iter_tar_records(shard))
            except (StopIteration, *SHARD_ERRORS):
                continue
            available = ", ".join(sorted(fields)) or "(none)"
            if not any(e in fields for e in self.image_exts):
                raise ConfigError(
                    f"{what}: sample {key!r} of {shard} has no image member ({';'.join(self.image_exts)}); "
                    f"its members are: {available}. Set data.image_key to the image extension."
                )
            if self.image2_key is not None and self.image2_key not in fields:
                raise ConfigError(
                    f"{what}: sample {key!r} of {shard} has no {self.image2_key!r} member (data.image2_key); "
                    f"its members are: {available}"
                )
            ck = self.caption_key
            if ck is not None:
                member = "json" if ck.startswith("json:") else ck
                if member not in fields:
                    raise ConfigError(
                        f"{what}: sample {key!r} of {shard} has no {member!r} member for data.caption_key={ck!r}; "
                        f"its members are: {available}"
                    )
                if ck.startswith("json:"):
                    try:
                        meta = json.loads(fields["json"])
                    except ValueError:
                        meta = {}
                    if isinstance(meta, dict) and ck[5:] not in meta:
                        raise ConfigError(
                            f"{what}: the .json of sample {key!r} has no field {ck[5:]!r} (data.caption_key={ck!r}); "
                            f"its fields are: {', '.join(sorted(meta)) or '(none)'}"
                        )
            return
        raise ConfigError(f"{what}: none of the first {min(8, len(shards))} shards could be read: {shards[:8]}")
