"""Test helper: write an evaluation dataset in CLIP_benchmark's WebDataset layout, so CLIP_benchmark
itself (``--dataset wds/NAME --dataset_root DIR``) and mmcl read the same bytes (parity tests, and
the WebDataset fixtures of the source and task tests)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from mmcl.data.evalsets import EvalDataset


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_clip_benchmark_wds(
    data: EvalDataset,
    out_dir: str | Path,
    dataset_type: str = "classification",
    split: str = "test",
    shard_size: int = 1000,
    classnames: list[str] | None = None,
    templates: list[str] | None = None,
) -> dict:
    """Write ``OUT/<split>/{0..n-1}.tar`` + ``nshards.txt``, ``dataset_type.txt`` and, for
    classification, ``classnames.txt`` and ``zeroshot_classification_templates.txt``.

    Classification keeps labelled items (``.png`` + ``.cls``); retrieval keeps captioned items
    (``.png`` + ``.txt``, one caption per line). Returns counts of written and skipped items.
    """
    if dataset_type not in ("classification", "retrieval"):
        raise ValueError(f"dataset_type must be classification or retrieval, got {dataset_type!r}")
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    data.source.transform = None
    written, skipped, shard, tar = 0, 0, 0, None
    for item in data.source:
        if isinstance(item, tuple):
            skipped += 1
            continue
        keep = item["label"] >= 0 if dataset_type == "classification" else bool(item["captions"])
        if not keep:
            skipped += 1
            continue
        if written % shard_size == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(out / split / f"{written // shard_size}.tar", "w")
            shard = written // shard_size + 1
        buf = io.BytesIO()
        item["image"].save(buf, format="PNG")
        key = f"s{written:08d}"
        _add(tar, f"{key}.png", buf.getvalue())
        if dataset_type == "classification":
            _add(tar, f"{key}.cls", str(item["label"]).encode())
        else:
            _add(tar, f"{key}.txt", "\n".join(item["captions"]).encode())
        written += 1
    if tar is not None:
        tar.close()
    (out / split / "nshards.txt").write_text(f"{shard}\n")
    (out / "dataset_type.txt").write_text(dataset_type + "\n")
    if dataset_type == "classification":
        names = classnames or data.classnames or []
        (out / "classnames.txt").write_text("".join(n + "\n" for n in names))
        # CLIP_benchmark formats templates with str.format(c=name).
        prompts = [t.replace("{}", "{c}") for t in (templates or data.templates or [])]
        (out / "zeroshot_classification_templates.txt").write_text("".join(t + "\n" for t in prompts))
    return {"written": written, "skipped": skipped, "shards": shard}
