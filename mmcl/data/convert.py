"""``mmcl data convert``: CSV/TSV/JSONL or an image folder -> WebDataset shards in img2dataset's layout.

Each sample is ``{key}.{jpg|png|webp}`` (the original bytes; other formats are re-encoded as JPEG),
``{key}.txt`` (its captions, one per line), ``{key}.json`` (key, caption, captions, source path,
label) and ``{key}.cls`` when it has a label. Keys are ``SSSSSIIII`` (shard, index), as
img2dataset writes them. Next to the shards: ``sizes.json`` (samples per shard, which open_clip
reads) and ``stats.json`` (totals and skips).

Images that cannot be decoded, missing or unreadable files and images without a caption are
skipped and counted, never written; so are the bad rows of a CSV/TSV/JSONL source (bytes that are
not UTF-8, a line that is not JSON, a caption cell over ``MAX_CAPTION_CHARS``; see
:mod:`mmcl.data.csv_jsonl`), each counted once by reason. Line breaks inside a caption become spaces (``.txt`` holds one
caption per line). Shards are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ConfigError
from .images import load_image
from .pairs import caption_list

KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def _records(
    src: str, kind: str, image_key, caption_key, label_key, caption_template, image_root=None, caption_separator=None
):
    """(path, captions, label) per image; ``(None, reason, None)`` per bad row of a table."""
    from .evalsets import FolderImages, TableImages

    p = Path(src)
    if kind in ("csv", "jsonl"):
        table = TableImages(
            p,
            image_key or "filepath",
            caption_key or "title",
            label_key,
            "\t" if p.suffix == ".tsv" else ",",
            image_root,
        )
        for image, captions, label in zip(table.images, table.captions, table.labels):
            if caption_separator:
                captions = [c for cell in captions for c in caption_list(cell, caption_separator)]
            yield table.root / image, captions, (label if label >= 0 else None)
        for reason in table.bad_rows:
            yield None, reason, None
    elif kind == "folder":
        folder = FolderImages(p)
        for path, label in zip(folder.files, folder.labels):
            name = folder.classnames[label] if label >= 0 else None
            captions = [caption_template.format(c=name)] if name is not None and caption_template else []
            yield path, captions, (label if label >= 0 else None)
    else:
        raise ConfigError(f"mmcl data convert reads csv, jsonl or folder sources, not {kind!r}")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    def __init__(self, out: Path, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.sizes: dict[str, int] = {}
        self.tar = None
        self.shard = -1
        self.count = 0

    def _open(self) -> None:
        self.close()
        self.shard += 1
        self.name = f"{self.shard:05d}.tar"
        self.tmp = self.out / f".{self.name}.tmp"
        self.tar = tarfile.open(self.tmp, "w")
        self.count = 0

    def write(self, members: dict[str, bytes]) -> str:
        if self.tar is None or self.count == self.shard_size:
            self._open()
        key = f"{self.shard:05d}{self.count:04d}"
        for ext, data in members.items():
            _add(self.tar, f"{key}.{ext}", data)
        self.count += 1
        return key

    def abort(self) -> None:
        """Remove the shard being written (an error stopped the conversion)."""
        if self.tar is not None:
            self.tar.close()
            self.tmp.unlink(missing_ok=True)
            self.tar = None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            os.replace(self.tmp, self.out / self.name)
            self.sizes[self.name] = self.count
            self.tar = None


def convert_to_wds(
    src: str,
    out: str,
    kind: str = "auto",
    shard_size: int = 1000,
    image_key: str | None = None,
    caption_key: str | None = None,
    label_key: str | None = None,
    caption_template: str | None = "a photo of a {c}.",
    progress: bool = True,
    image_root: str | None = None,
    caption_separator: str | None = None,
) -> dict:
    """Write shards of ``src`` into ``out``; returns the statistics also saved as ``stats.json``."""
    from .sources import detect_source

    if shard_size < 1 or shard_size > 9999:
        raise ConfigError(f"--shard-size must be in 1..9999 (keys hold 4 digits per shard), got {shard_size}")
    kind = detect_source(src) if kind == "auto" else kind
    records = list(
        _records(src, kind, image_key, caption_key, label_key, caption_template, image_root, caption_separator)
    )
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    if any(outdir.glob("*.tar")):
        raise ConfigError(f"{out} already holds shards; choose an empty folder")
    writer, skipped = _ShardWriter(outdir, shard_size), Counter()
    need_caption = kind != "folder" or bool(caption_template)
    try:
        _write_all(records, writer, skipped, need_caption, progress)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats = {
        "source": str(src),
        "kind": kind,
        "samples": sum(writer.sizes.values()),
        "shards": len(writer.sizes),
        "skipped": dict(sorted(skipped.items())),
    }
    (outdir / "sizes.json").write_text(json.dumps(writer.sizes, indent=1) + "\n")
    (outdir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _write_all(records, writer: _ShardWriter, skipped: Counter, need_caption: bool, progress: bool) -> None:
    for path, captions, label in tqdm(records, desc="convert", unit="img", disable=not progress):
        if path is None:  # a bad row of the source table
            skipped[captions] += 1
            continue
        if need_caption and not captions:
            skipped["empty_caption"] += 1
            continue
        try:
            raw = Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            skipped["missing_image"] += 1
            continue
        except OSError:  # permissions, I/O errors
            skipped["unreadable_file"] += 1
            continue
        captions = [" ".join(c.split()) for c in captions]  # one caption per .txt line
        image, reason = load_image(io.BytesIO(raw))
        if image is None:
            skipped[reason] += 1
            continue
        fmt = KEEP_FORMATS.get(_image_format(raw))
        if fmt is None:  # re-encode formats img2dataset readers may not expect
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=95)
            raw, fmt = buf.getvalue(), "jpg"
        meta = {"caption": captions[0] if captions else None, "captions": captions, "source": str(path)}
        members = {fmt: raw, "txt": "\n".join(captions).encode()}
        if label is not None:
            meta["label"] = label
            members["cls"] = str(label).encode()
        key = writer.write(members)
        meta["key"] = key
        # the json is written last; its key is known once the sample has a slot
        _add(writer.tar, f"{key}.json", json.dumps(meta).encode())


def _image_format(raw: bytes) -> str | None:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        return im.format
