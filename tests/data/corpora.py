"""Small local corpora in every training format, built from the tiny generated corpus."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

from PIL import Image


def rows(corpus: Path, split: str = "train") -> list[dict]:
    with open(corpus / f"{split}.csv", newline="") as f:
        return list(csv.DictReader(f))


def jpeg_bytes(path: Path, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def img2dataset_shards(
    corpus: Path, out: Path, n_shards: int, captions: dict[int, str] | None = None, damage=None
) -> list[Path]:
    """Shards laid out as img2dataset writes them: ``{shard:05d}.tar`` holding ``{key}.jpg``,
    ``{key}.txt`` and ``{key}.json`` (caption, url, key, status), keys ``SSSSSIIII``.

    ``captions`` overrides the caption of some rows; ``damage(i, jpeg) -> bytes`` alters images."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(corpus)
    per = -(-len(table) // n_shards)
    paths = []
    for s in range(n_shards):
        path = out / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for j, i in enumerate(range(s * per, min(len(table), (s + 1) * per))):
                key = f"{s:05d}{j:04d}"
                caption = (captions or {}).get(i, table[i]["title"])
                jpg = jpeg_bytes(corpus / table[i]["filepath"])
                if damage is not None:
                    jpg = damage(i, jpg)
                meta = {"caption": caption, "url": f"http://example.com/{i}.jpg", "key": key, "status": "success"}
                _add(tar, f"{key}.jpg", jpg)
                _add(tar, f"{key}.txt", caption.encode())
                _add(tar, f"{key}.json", json.dumps(meta).encode())
        paths.append(path)
    return paths


def jsonl_file(corpus: Path, out: Path) -> Path:
    """JSONL with a caption list per image (the CSV caption twice, once upper-cased)."""
    with open(out, "w") as f:
        for r in rows(corpus):
            f.write(json.dumps({"image": str(corpus / r["filepath"]), "captions": [r["title"], r["title"].upper()]}))
            f.write("\n")
    return out


def class_folder(corpus: Path, out: Path) -> Path:
    """``out/<class>/<image>`` with two classes (even / odd rows)."""
    for i, r in enumerate(rows(corpus)):
        d = out / ("circles" if i % 2 == 0 else "red_squares")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / r["filepath"], d / Path(r["filepath"]).name)
    return out


def hf_dataset(corpus: Path, out: Path, parquet: bool = False) -> Path:
    """A Hugging Face dataset with an ``Image`` column, saved with ``save_to_disk`` (or as parquet)."""
    import datasets

    table = rows(corpus)
    ds = datasets.Dataset.from_dict(
        {"image": [str(corpus / r["filepath"]) for r in table], "caption": [r["title"] for r in table]}
    ).cast_column("image", datasets.Image())
    if parquet:
        out.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out / "train-00000.parquet"))
        return out / "train-00000.parquet"
    ds.save_to_disk(str(out))
    return out
