"""``wds_<name>``: CLIP_benchmark's WebDataset export of a dataset, read from a local copy.

The layout is CLIP_benchmark's (``<split>/nshards.txt``, ``<split>/{0..n-1}.tar``,
``classnames.txt``, ``zeroshot_classification_templates.txt``, ``dataset_type.txt``), the form in
which CLIP_benchmark and DataComp publish their test sets (``clip-benchmark/wds_<name>`` on the
Hugging Face Hub). Class names and templates are the export's own; where it has none, the shipped
lists of ``<name>`` (``wds_vtab-cifar100`` -> ``cifar100``)."""

from __future__ import annotations

import functools
from pathlib import Path

from . import Benchmark, Missing, Request

LAYOUT = (
    "<split>/nshards.txt + <split>/{0..n-1}.tar [+ classnames.txt, zeroshot_classification_templates.txt, "
    "dataset_type.txt] (CLIP_benchmark's WebDataset export)"
)


def short_name(name: str) -> str:
    """``wds_vtab-cifar100`` -> ``cifar100``: the dataset a WebDataset export holds."""
    rest = name[4:]
    for prefix in ("vtab-", "vtab/", "tfds-", "tfds/", "retrieval-", "retrieval/"):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
    return rest


def _build(name: str, root: Path, req: Request):
    from ..sources import open_dataset

    if not (root / req.split / "nshards.txt").is_file():
        raise Missing(str(root / req.split / "nshards.txt"))
    data = open_dataset(str(root), "wds", req.split, max_items=req.max_items, labels=req.labels)
    short = short_name(name)
    data.info.setdefault("classnames", short)
    data.info.setdefault("templates", short)
    return data


def _download(name: str, root: Path, req: Request) -> None:
    from huggingface_hub import snapshot_download

    repo = f"clip-benchmark/wds_{name[4:].replace('/', '-')}"
    patterns = [f"{req.split}/*", "*.txt"]
    snapshot_download(repo_id=repo, repo_type="dataset", local_dir=str(root), allow_patterns=patterns)


@functools.cache
def wds_benchmark(name: str) -> Benchmark:
    """The benchmark ``wds_<name>`` (also spelled ``wds/<name>``)."""
    name = "wds_" + name[4:]
    return Benchmark(
        name=name,
        task="zeroshot",
        layout=LAYOUT,
        build=functools.partial(_build, name),
        splits=("test", "train"),
        download=functools.partial(_download, name),
    )
