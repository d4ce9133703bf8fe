"""Every registered data source reads a tiny fixture with its training reader and its evaluation
reader, and the one detector claims the fixture for it. The tests are generated from
``mmcl.list_sources()``: a source registered without an entry in ``FIXTURES`` fails here."""

from __future__ import annotations

import pytest
from torchvision import transforms

import mmcl
from mmcl.data.sources import build_train_data, detect_source, get_source, open_dataset, register_source
from mmcl.errors import ConfigError
from mmcl.recipe import AugmentConfig, DataConfig

from ..eval.clip_benchmark_wds import write_clip_benchmark_wds
from .corpora import class_folder, hf_dataset, img2dataset_shards, jsonl_file


def _csv(corpus, tmp_path):
    return str(corpus / "train.csv"), {}


def _jsonl(corpus, tmp_path):
    return str(jsonl_file(corpus, tmp_path / "train.jsonl")), {"image_key": "image", "caption_key": "captions"}


def _folder(corpus, tmp_path):
    return str(class_folder(corpus, tmp_path / "folder")), {}


def _hf(corpus, tmp_path):
    return str(hf_dataset(corpus, tmp_path / "hf")), {}


def _wds(corpus, tmp_path):
    img2dataset_shards(corpus, tmp_path / "shards", 2)
    return str(tmp_path / "shards" / "{00000..00001}.tar"), {}


# source name -> (corpus, tmp_path) -> (a path in its format, data-section keys for training)
FIXTURES = {"csv": _csv, "jsonl": _jsonl, "folder": _folder, "hf": _hf, "wds": _wds}


def _tokenize(texts):
    return {}


@pytest.mark.parametrize("name", mmcl.list_sources())
def test_every_source_reads_for_training_and_for_evaluation(name, tiny_corpus, tmp_path):
    assert name in FIXTURES, f"data source {name!r} has no fixture: add one to FIXTURES in {__file__}"
    path, keys = FIXTURES[name](tiny_corpus, tmp_path)
    assert detect_source(path) == name
    cfg = DataConfig(train=path, batch_size=4, augment=AugmentConfig(enabled=False), **keys)
    data = build_train_data(cfg, transforms.ToTensor(), _tokenize, seed=0)
    assert data.kind == name and f"({name}" in data.description
    data.start_epoch(0, 0, {})
    batch = next(iter(data.loader))
    assert batch["size"] == 4 and batch["images"].shape[0] == 4 and not batch["skipped"]
    # the evaluation reader: one item per image, with its captions
    test = open_dataset(path, split="train", image_key=keys.get("image_key"), caption_key=keys.get("caption_key"))
    assert test.kind == name
    items = [item for _, item in zip(range(6), test.source)]
    assert len(items) == 6 and all(isinstance(it, dict) for it in items)
    assert all(it["image"].size == (32, 32) for it in items)
    if name != "folder":  # a folder has class names, not captions
        assert all(it["captions"] for it in items)


def test_one_detector_for_training_and_evaluation(tiny_corpus, tmp_path):
    """The union of the rules training and evaluation used to apply apart."""
    assert detect_source("x/{000..009}.tar") == "wds"
    assert detect_source(["a.tar", "b.tar"]) == "wds"
    for path in ("shards.txt", "shards.list", "x.tar", "x.tar.gz", "x.tgz"):
        assert detect_source(path) == "wds", path
    assert detect_source("x.tsv") == "csv" and detect_source("x.jsonl") == "jsonl"
    assert detect_source("x.parquet") == "hf" and detect_source("x.arrow") == "hf"
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "part-0.parquet").write_bytes(b"")
    assert detect_source(str(tmp_path / "pq")) == "hf"  # a folder of parquet files
    data = open_dataset(tiny_corpus / "test.csv")
    write_clip_benchmark_wds(data, tmp_path / "bench", "retrieval", shard_size=8)
    assert detect_source(str(tmp_path / "bench")) == "wds"  # CLIP_benchmark's layout
    img2dataset_shards(tiny_corpus, tmp_path / "tars", 1)
    assert detect_source(str(tmp_path / "tars")) == "wds"  # a folder of shards
    assert detect_source(str(class_folder(tiny_corpus, tmp_path / "f"))) == "folder"
    with pytest.raises(ConfigError, match="cannot tell the format.*valid choices: wds, csv, jsonl, hf, folder"):
        detect_source(str(tmp_path / "nothing.xyz"))


def test_training_reads_clip_benchmarks_layout(tiny_corpus, tmp_path):
    write_clip_benchmark_wds(open_dataset(tiny_corpus / "test.csv"), tmp_path / "bench", "retrieval", split="train")
    cfg = DataConfig(train=str(tmp_path / "bench"), batch_size=4, augment=AugmentConfig(enabled=False))
    data = build_train_data(cfg, transforms.ToTensor(), _tokenize, seed=0)
    data.start_epoch(0, 0, {})
    assert sum(b["size"] for b in data.loader) == 16


def test_a_registered_source_is_read_by_training_and_evaluation(tiny_corpus, tmp_path):
    """A plugin format: `register_source`, and both readers take it (here: a CSV under another suffix)."""
    from mmcl.data.sources import SOURCES
    from mmcl.data.sources.table import CsvSource

    class PairsSource(CsvSource):
        suffixes = (".pairs",)

    path = tmp_path / "train.pairs"
    path.write_text((tiny_corpus / "train.csv").read_text())
    (tmp_path / "train").symlink_to(tiny_corpus / "train")
    register_source("pairs_test")(PairsSource)
    try:
        assert detect_source(str(path)) == "pairs_test" and get_source("pairs_test").name == "pairs_test"
        cfg = DataConfig(train=str(path), batch_size=4, augment=AugmentConfig(enabled=False))
        assert len(build_train_data(cfg, transforms.ToTensor(), _tokenize).dataset) == 48
        assert len(open_dataset(path).source) == 48
        with pytest.raises(ConfigError, match="valid choices: auto, csv, folder, hf, jsonl, pairs_test, wds"):
            get_source("pair_test")
    finally:
        del SOURCES._items["pairs_test"]


def test_an_image_only_run_describes_images_not_pairs(tiny_corpus):
    cfg = DataConfig(train=str(tiny_corpus / "train.csv"), batch_size=4, augment=AugmentConfig(enabled=False))
    data = build_train_data(cfg, transforms.ToTensor(), None, need_caption=False)
    assert data.description.startswith("48 images (csv)")
    assert build_train_data(cfg, transforms.ToTensor(), _tokenize).description.startswith("48 pairs (csv)")
