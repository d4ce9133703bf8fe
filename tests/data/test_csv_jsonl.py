"""CSV/TSV/JSONL paired datasets: column options, and bad samples skipped and counted."""

import csv
import json

import pytest
import torch

from mmcl.data import ImageTextCollate, PairedImageTextDataset
from mmcl.errors import ConfigError


def to_tensor(image):
    return torch.zeros(3, 4, 4)


def ident_tokenize(texts):
    return {
        "input_ids": torch.zeros(len(texts), 2, dtype=torch.long),
        "attention_mask": torch.ones(len(texts), 2, dtype=torch.long),
    }


def test_tsv_and_jsonl_with_custom_columns(tiny_corpus, tmp_path):
    with open(tiny_corpus / "test.csv") as f:
        rows = list(csv.DictReader(f))
    tsv = tmp_path / "pairs.tsv"
    with open(tsv, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["img", "caption"])
        w.writerows([[str(tiny_corpus / r["filepath"]), r["title"]] for r in rows])
    ds = PairedImageTextDataset(tsv, to_tensor, image_key="img", caption_key="caption", separator="\t")
    assert len(ds) == len(rows) and ds[0]["text"] == rows[0]["title"]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"image": r["filepath"], "text": r["title"]}) + "\n" for r in rows))
    ds = PairedImageTextDataset(jsonl, to_tensor, image_key="image", caption_key="text", image_root=str(tiny_corpus))
    assert ds[3]["text"] == rows[3]["title"] and ds[3]["image"].shape == (3, 4, 4)


def test_missing_column_names_the_available_ones(tiny_corpus):
    with pytest.raises(ConfigError, match="column 'caption' .* available columns: filepath, title, label, key"):
        PairedImageTextDataset(tiny_corpus / "test.csv", to_tensor, caption_key="caption")


def test_corrupt_missing_and_empty_are_skipped_and_counted(corpus_copy):
    with open(corpus_copy / "train.csv") as f:
        rows = list(csv.DictReader(f))
    (corpus_copy / rows[0]["filepath"]).unlink()  # missing
    (corpus_copy / rows[1]["filepath"]).write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # corrupt
    data = (corpus_copy / rows[2]["filepath"]).read_bytes()
    (corpus_copy / rows[2]["filepath"]).write_bytes(data[: len(data) // 2])  # truncated
    rows[3]["title"] = "   "  # empty caption
    with open(corpus_copy / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = PairedImageTextDataset(corpus_copy / "train.csv", to_tensor)
    batch = ImageTextCollate(ident_tokenize)([ds[i] for i in range(8)])
    assert batch["skipped"] == {"missing_image": 1, "corrupt_image": 2, "empty_caption": 1}
    assert batch["size"] == 4 and batch["images"].shape[0] == 4
    assert batch["index"].tolist() == [4, 5, 6, 7]


def _rows(corpus):
    with open(corpus / "train.csv") as f:
        return list(csv.DictReader(f))[:6]


def test_several_captions_per_image_one_seeded_pick_per_read(tiny_corpus, tmp_path):
    rows = _rows(tiny_corpus)
    path = tmp_path / "multi.jsonl"
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"image": str(tiny_corpus / r["filepath"]), "caps": [r["title"], "b", "c", " "]}) + "\n")
        f.write(json.dumps({"image": str(tiny_corpus / rows[0]["filepath"]), "caps": [" ", ""]}) + "\n")

    def ds(seed=0):
        return PairedImageTextDataset(
            path, transform=lambda im: 0, image_key="image", caption_key="caps", caption_seed=seed
        )

    a, b = ds(), ds()
    picks = {}
    for epoch in range(40):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(rows)):
            assert a[i]["text"] == b[i]["text"]  # the same for a fresh dataset (another worker, a resume)
            picks.setdefault(i, []).append(a[i]["text"])
    for i, r in enumerate(rows):
        assert set(picks[i]) == {r["title"], "b", "c"}  # every non-empty caption is used, blanks never
    assert a[len(rows)] == (None, "empty_caption")
    other = ds(seed=1)
    other.set_epoch(39)
    assert [other[i]["text"] for i in range(len(rows))] != [picks[i][-1] for i in range(len(rows))]
    assert a.captions[0] == rows[0]["title"]  # the first caption stands for the row elsewhere


def test_caption_separator_in_csv(tiny_corpus, tmp_path):
    rows = _rows(tiny_corpus)
    path = tmp_path / "multi.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "title"])
        w.writeheader()
        w.writerows({"filepath": str(tiny_corpus / r["filepath"]), "title": f"{r['title']}|other"} for r in rows)
    one = PairedImageTextDataset(path, transform=lambda im: 0)
    assert one[0]["text"] == f"{rows[0]['title']}|other"  # without a separator a cell is one caption
    many = PairedImageTextDataset(path, transform=lambda im: 0, caption_separator="|")
    seen = set()
    for epoch in range(10):
        many.set_epoch(epoch)
        seen.add(many[0]["text"])
    assert seen == {rows[0]["title"], "other"}


def test_training_from_jsonl_with_caption_lists(tiny_corpus, tmp_path):
    from mmcl.recipe import recipe_from_dict
    from mmcl.train import Trainer

    from ..conftest import tiny_recipe_dict

    with open(tiny_corpus / "train.csv") as f:
        rows = list(csv.DictReader(f))
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"filepath": str(tiny_corpus / r["filepath"]), "title": [r["title"], r["key"]]}) + "\n"
            for r in rows
        )
    )
    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=2)
    d["data"].update(train=str(path), source="jsonl")
    d["eval"]["datasets"] = []
    Trainer(recipe_from_dict(d)).fit()
    assert (tmp_path / "run" / "checkpoints" / "latest").exists() or any((tmp_path / "run" / "checkpoints").iterdir())
    d["data"]["caption_separator"] = ""
    with pytest.raises(ConfigError, match="caption_separator must be a non-empty string"):
        recipe_from_dict(d)
