"""A recipe's evaluation reads every format `mmcl eval` reads: during training, a CLIP_benchmark
WebDataset and a Hugging Face dataset holding the same images as a CSV give the CSV's numbers."""

from __future__ import annotations

import json

import pytest

import mmcl
from mmcl.data.sources import open_dataset
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict
from .clip_benchmark_wds import write_clip_benchmark_wds


def _hf_copy(corpus, out):
    """test.csv as a saved Hugging Face dataset: an Image column, captions, ClassLabel labels, keys."""
    import csv

    import datasets

    with open(corpus / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = (corpus / "classnames.txt").read_text().split("\n")[:32]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
            "key": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [str(corpus / r["filepath"]) for r in rows],
            "caption": [r["title"] for r in rows],
            "label": [int(r["label"]) for r in rows],
            "key": [r["key"] for r in rows],
        },
        features=features,
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(str(out))
    return out


def test_a_recipe_evaluates_webdataset_and_hf_data_during_training(tiny_corpus, tmp_path):
    data = open_dataset(tiny_corpus / "test.csv")
    write_clip_benchmark_wds(data, tmp_path / "wds_cls", "classification", shard_size=8)
    write_clip_benchmark_wds(data, tmp_path / "wds_ret", "retrieval", shard_size=8)
    hf = _hf_copy(tiny_corpus, tmp_path / "hf")
    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=2)
    csv_entry = d["eval"]["datasets"][0]  # zeroshot + retrieval on test.csv, with its classnames/templates
    templates = csv_entry["templates"]
    d["eval"]["datasets"] += [
        # class names and templates from the layout's own files
        {"name": "wds_cls", "path": str(tmp_path / "wds_cls"), "tasks": ["zeroshot"]},
        {"name": "wds_ret", "path": str(tmp_path / "wds_ret"), "tasks": ["retrieval"]},
        # class names from the ClassLabel feature; columns found by name; the split of a DatasetDict
        {"name": "hf", "path": str(hf), "kind": "hf", "tasks": ["zeroshot", "retrieval"], "group_key": "key"},
    ]
    d["eval"]["datasets"][-1]["templates"] = templates
    records = mmcl.Trainer(recipe_from_dict(d)).fit()
    got = {(r["dataset"], r["task"]): r["metrics"] for r in records}
    assert {r["dataset"] for r in json.loads((tmp_path / "run" / "results.json").read_text())} == {
        "test",
        "wds_cls",
        "wds_ret",
        "hf",
    }
    zs, ret = got[("test", "zeroshot")], got[("test", "retrieval")]
    assert zs["num_items"] == got[("wds_cls", "zeroshot")]["num_items"] == got[("hf", "zeroshot")]["num_items"] > 0
    for name in ("wds_cls", "hf"):
        for metric in ("acc1", "acc5", "mean_per_class_recall"):
            assert got[(name, "zeroshot")][metric] == pytest.approx(zs[metric], abs=1e-9, nan_ok=True), (name, metric)
    for name in ("wds_ret", "hf"):
        assert got[(name, "retrieval")]["num_images"] == ret["num_images"] == 16
        for k in (1, 5, 10):
            for side in ("image", "text"):
                metric = f"{side}_retrieval_recall@{k}"
                assert got[(name, "retrieval")][metric] == pytest.approx(ret[metric], abs=1e-9), (name, metric)
    # a group column of the HF dataset gives the attribute-level recall a CSV's does
    for metric in ("image_retrieval_attribute_recall@1", "duplicate_caption_fraction"):
        assert got[("hf", "retrieval")][metric] == pytest.approx(ret[metric], abs=1e-9)
