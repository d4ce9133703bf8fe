"""Evaluation datasets in every format give the same items; bad samples are skipped and counted."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import pil_to_tensor

from mmcl.errors import ConfigError
from mmcl.eval.datasets import detect_kind, open_dataset, resolve_list
from mmcl.eval.encode import encode_dataset

from .clip_benchmark_wds import write_clip_benchmark_wds


class PixelAdapter:
    """Features straight from pixels and caption characters: cheap and deterministic."""

    device = torch.device("cpu")

    @staticmethod
    def preprocess(image):
        return pil_to_tensor(image.resize((8, 8))).float()

    def encode_image(self, x):
        return F.normalize(x.flatten(1), dim=-1)

    def encode_text(self, texts):
        rows = [torch.tensor([float(ord(c)) for c in (t * 192)[:192]]) for t in texts]
        return F.normalize(torch.stack(rows), dim=-1)


def _rows(corpus):
    import csv

    with open(corpus / "test.csv") as f:
        return list(csv.DictReader(f))


def test_csv_rows_sharing_an_image_are_its_captions(corpus_copy):
    rows = _rows(corpus_copy)
    extra = [{**rows[0], "title": "another caption"}, {**rows[3], "title": "  "}]
    path = corpus_copy / "multi.csv"
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows + extra)
    data = open_dataset(path)
    assert data.kind == "csv" and len(data.source) == len(rows)
    assert data.classnames and len(data.classnames) == 32 and data.templates  # picked up beside the file
    enc = encode_dataset(PixelAdapter(), data, batch_size=5, progress=False)
    assert enc.image_features.shape[0] == len(rows) and enc.text_features.shape[0] == len(rows) + 1
    assert enc.text_to_image.tolist().count(0) == 2
    assert enc.captions[enc.text_to_image.tolist().index(0) + 1] == "another caption"
    assert enc.labels.tolist() == [int(r["label"]) for r in rows]


def test_jsonl_caption_lists(corpus_copy):
    rows = _rows(corpus_copy)
    path = corpus_copy / "test.jsonl"
    path.write_text("".join(json.dumps({"image": r["filepath"], "captions": [r["title"], "x"]}) + "\n" for r in rows))
    enc = encode_dataset(PixelAdapter(), open_dataset(path), progress=False)
    assert enc.text_features.shape[0] == 2 * len(rows)
    assert enc.text_to_image.tolist() == [i // 2 for i in range(2 * len(rows))]


def test_missing_column_names_the_available_ones(corpus_copy):
    with pytest.raises(ConfigError, match="column 'caption'.*available columns: filepath, title, label, key"):
        open_dataset(corpus_copy / "test.csv", caption_key="caption")


def test_bad_images_are_skipped_and_counted(corpus_copy):
    rows = _rows(corpus_copy)
    (corpus_copy / rows[0]["filepath"]).write_bytes(b"not a png")
    (corpus_copy / rows[1]["filepath"]).unlink()
    enc = encode_dataset(PixelAdapter(), open_dataset(corpus_copy / "test.csv"), progress=False)
    assert enc.skipped == {"corrupt_image": 1, "missing_image": 1}
    assert enc.image_features.shape[0] == len(rows) - 2


def test_image_folder_with_class_subfolders(corpus_copy, tmp_path):
    rows = [r for r in _rows(corpus_copy) if int(r["label"]) >= 0]
    names = (corpus_copy / "classnames.txt").read_text().split("\n")
    root = tmp_path / "folder"
    for r in rows:
        d = root / names[int(r["label"])].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus_copy / r["filepath"], d / r["filepath"].split("/")[-1])
    (root / sorted(p.name for p in root.iterdir())[0] / "broken.png").write_bytes(b"")
    data = open_dataset(root)
    assert data.kind == "folder" and data.classnames == sorted({names[int(r["label"])] for r in rows})
    enc = encode_dataset(PixelAdapter(), data, texts=False, progress=False)
    assert enc.skipped == {"corrupt_image": 1} and enc.image_features.shape[0] == len(rows)
    assert [data.classnames[i] for i in enc.labels] == sorted(names[int(r["label"])] for r in rows)


def test_webdataset_layout_round_trip_and_unreadable_shard(corpus_copy, tmp_path):
    data = open_dataset(corpus_copy / "test.csv")
    stats = write_clip_benchmark_wds(data, tmp_path / "wds", "retrieval", shard_size=5)
    assert stats["shards"] == 4 and detect_kind(str(tmp_path / "wds")) == "wds"
    (tmp_path / "wds" / "test" / "1.tar").write_bytes(b"truncated garbage")
    wds = open_dataset(tmp_path / "wds")
    assert wds.dataset_type == "retrieval"
    enc = encode_dataset(PixelAdapter(), wds, batch_size=4, num_workers=2, progress=False)
    assert enc.skipped == {"unreadable_shard": 1}
    assert enc.image_features.shape[0] == 16 - 5
    # the readable shards hold the same pixels as the CSV's images, so the same features
    ref = encode_dataset(PixelAdapter(), open_dataset(corpus_copy / "test.csv"), progress=False).image_features
    matches = (enc.image_features @ ref.T).max(dim=1).values
    assert torch.allclose(matches, torch.ones_like(matches), atol=1e-6)
    # a brace pattern over the shards reads them as plain WebDataset shards
    pattern = str(tmp_path / "wds" / "test" / "{2..3}.tar")
    assert encode_dataset(PixelAdapter(), open_dataset(pattern), progress=False).image_features.shape[0] == 6


def test_hugging_face_saved_dataset_and_parquet(corpus_copy, tmp_path):
    import datasets

    rows = [r for r in _rows(corpus_copy) if int(r["label"]) >= 0]
    names = (corpus_copy / "classnames.txt").read_text().split("\n")[:32]
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [str(corpus_copy / r["filepath"]) for r in rows],
            "text": [r["title"] for r in rows],
            "label": [int(r["label"]) for r in rows],
        },
        features=features,
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    data = open_dataset(tmp_path / "hf")
    assert data.kind == "hf" and data.classnames == names
    enc = encode_dataset(PixelAdapter(), data, progress=False)
    assert enc.labels.tolist() == [int(r["label"]) for r in rows] and enc.captions == [r["title"] for r in rows]
    with pytest.raises(ConfigError, match="no split 'validation'; available splits: test"):
        open_dataset(tmp_path / "hf", split="validation")
    with pytest.raises(ConfigError, match="available columns: image, text, label"):
        open_dataset(tmp_path / "hf", label_key="fine_label")
    ds.to_parquet(str(tmp_path / "test.parquet"))
    enc2 = encode_dataset(PixelAdapter(), open_dataset(tmp_path / "test.parquet"), progress=False)
    assert torch.equal(enc2.image_features, enc.image_features)


def test_shipped_class_names_and_templates(tmp_path):
    assert len(resolve_list("imagenet1k", "classnames", None)) == 1000
    assert len(resolve_list("imagenet1k", "templates", None)) == 80
    assert resolve_list("cifar10", "classnames", None)[:2] == ["airplane", "automobile"]
    assert len(resolve_list("cifar100", "classnames", None)) == 100
    f = tmp_path / "names.txt"
    f.write_text("cat\ndog\n")
    assert resolve_list(str(f), "classnames", ["x"]) == ["cat", "dog"]
    assert resolve_list(None, "classnames", ["x"]) == ["x"]
    with pytest.raises(ConfigError, match="shipped: .*cifar10"):
        resolve_list("imagenet21k", "classnames", None)


def test_unknown_paths_and_kinds(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        open_dataset(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="not a data source; valid choices: auto, csv, folder, hf, jsonl, wds"):
        open_dataset(tmp_path, kind="tfds")
    (tmp_path / "wds" / "train").mkdir(parents=True)
    (tmp_path / "wds" / "train" / "nshards.txt").write_text("1")
    with pytest.raises(ConfigError, match="no test/nshards.txt; splits with shards: train"):
        open_dataset(tmp_path / "wds")
