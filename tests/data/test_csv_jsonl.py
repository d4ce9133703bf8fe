"""CSV/TSV/JSONL paired datasets: column options, and bad samples skipped and counted."""

import csv
import json

import pytest
import torch

from mmcl.config import ConfigError
from mmcl.data import ImageTextCollate, PairedImageTextDataset


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
