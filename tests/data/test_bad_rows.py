"""One bad row of a CSV/TSV/JSONL file never stops a run: bytes that are not UTF-8, a caption cell
over the csv module's field limit and a line that is not JSON are skipped and counted, in training,
in evaluation, by `mmcl data convert` and by `mmcl data inspect`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from mmcl.cli import main
from mmcl.data.csv_jsonl import MAX_CAPTION_CHARS, BadRow, PairedImageTextDataset, read_table
from mmcl.errors import ConfigError

from ..conftest import tiny_recipe_dict
from .corpora import rows

HUGE = "x" * 140_000  # over the csv module's default field limit (131,072) and MAX_CAPTION_CHARS
LATIN1 = "@@LATIN1@@"  # replaced by the Latin-1 bytes of "café", which are not UTF-8
BAD_ENCODING = {3, 20}
TOO_LONG = {30}
NOT_JSON = {40}


def _bytes(text: str) -> bytes:
    return text.encode().replace(LATIN1.encode(), "café".encode("latin-1"))


def damaged_csv(corpus, path, split="train", bad_encoding=BAD_ENCODING, too_long=TOO_LONG) -> tuple[bytes, list]:
    """``split`` of the corpus as a CSV (absolute image paths) with Latin-1 bytes in the captions of
    ``bad_encoding`` and a 140,000-character caption in ``too_long``."""
    table = rows(corpus, split)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(table):
        r = {**r, "filepath": str(corpus / r["filepath"])}
        if i in bad_encoding:
            r["title"] = f"{LATIN1} {r['title']}"
        if i in too_long:
            r["title"] = HUGE
        w.writerow(r)
    path.write_bytes(_bytes(buf.getvalue()))
    return path, table


def damaged_jsonl(corpus, path) -> tuple[bytes, list]:
    """The train split as JSONL with the CSV's damage, plus a line cut short (not JSON) in ``NOT_JSON``."""
    table = rows(corpus)
    lines = []
    for i, r in enumerate(table):
        line = json.dumps({"filepath": str(corpus / r["filepath"]), "title": r["title"]}, ensure_ascii=False)
        if i in BAD_ENCODING:
            line = line.replace('"title": "', f'"title": "{LATIN1} ')
        if i in TOO_LONG:
            line = json.dumps({"filepath": str(corpus / r["filepath"]), "title": HUGE})
        if i in NOT_JSON:
            line = line[: len(line) // 2]
        lines.append(line + "\n")
    path.write_bytes(_bytes("".join(lines)))
    return path, table


# --- read_table and the datasets ----------------------------------------------------------------


def test_read_table_reads_every_row_and_marks_the_bad_ones(tiny_corpus, tmp_path):
    path, table = damaged_csv(tiny_corpus, tmp_path / "train.csv")
    kept = read_table(path, keep_bad=True)
    assert len(kept) == len(table)  # the huge cell did not raise _csv.Error, nothing was lost
    assert {i for i, r in enumerate(kept) if isinstance(r, BadRow)} == BAD_ENCODING
    assert kept[3].reason == "bad_encoding" and kept[3].line == 5  # header + 0-based index 3 + 1
    assert kept[3]["filepath"] == str(tiny_corpus / table[3]["filepath"])  # the fields that could be read
    assert kept[30]["title"] == HUGE  # read whole; too long is the datasets' call (they know the column)
    assert len(kept[30]["title"]) > MAX_CAPTION_CHARS
    dropped = read_table(path)
    assert len(dropped) == len(table) - 2 and dict(dropped.skipped) == {"bad_encoding": 2}
    assert dict(kept.skipped) == {"bad_encoding": 2}


def test_read_table_jsonl_bad_lines_and_a_file_with_nothing_usable(tiny_corpus, tmp_path):
    path, table = damaged_jsonl(tiny_corpus, tmp_path / "train.jsonl")
    kept = read_table(path, keep_bad=True)
    assert len(kept) == len(table)
    reasons = {i: r.reason for i, r in enumerate(kept) if isinstance(r, BadRow)}
    assert reasons == {3: "bad_encoding", 20: "bad_encoding", 40: "bad_row"}
    assert kept[40].line == 41 and "not valid JSON" in kept[40].detail
    assert kept[40]["title"] is None  # a field a bad row lacks reads as None
    # a JSON value that is not an object, and an escaped lone surrogate, are bad rows too
    other = tmp_path / "other.jsonl"
    other.write_text('{"filepath": "a.png", "title": "ok"}\n[1, 2]\n\n{"filepath": "b.png", "title": "\\udce9"}\n')
    assert [getattr(r, "reason", None) for r in read_table(other, keep_bad=True)] == [None, "bad_row", "bad_encoding"]
    # nothing parses (a CSV named .jsonl): one clear line
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("filepath,title\na.png,a caption\n")
    with pytest.raises(ConfigError, match=r"wrong.jsonl:1: no usable row in the file \(2 bad; the first: not valid"):
        read_table(wrong)


def test_read_table_csv_details(tmp_path):
    """A UTF-8 byte order mark, blank lines, short and long rows read as csv.DictReader reads them."""
    path = tmp_path / "t.tsv"
    path.write_bytes("\ufefffilepath\ttitle\n\na.png\tone\nb.png\n c.png\ttwo\textra\n".encode())
    got = read_table(path, "\t")
    assert got == list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig")), delimiter="\t"))
    assert list(got[0]) == ["filepath", "title"] and got[1]["title"] is None and got[2][None] == ["extra"]


def to_tensor(image):
    import torch

    return torch.zeros(3, 4, 4)


def test_training_dataset_keeps_bad_rows_in_place(tiny_corpus, tmp_path):
    path, table = damaged_jsonl(tiny_corpus, tmp_path / "train.jsonl")
    ds = PairedImageTextDataset(path, to_tensor)
    assert len(ds) == len(table)  # indices, resume positions and shards are those of the file
    assert ds.bad_rows == {3: "bad_encoding", 20: "bad_encoding", 30: "caption_too_long", 40: "bad_row"}
    assert ds[3] == (None, "bad_encoding") and ds[30] == (None, "caption_too_long") and ds[40] == (None, "bad_row")
    assert ds[4]["text"] == table[4]["title"]
    assert ds.captions[3] == "" and len(set(ds.images)) == len(table)  # a bad row shares no image path
    # image-only training ignores the caption column, so a long caption is no reason to skip
    images_only = PairedImageTextDataset(path, to_tensor, need_caption=False)
    assert images_only.bad_rows == {3: "bad_encoding", 20: "bad_encoding", 40: "bad_row"}
    # a label that is not an integer is a bad row, not a crash
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(f"filepath,title,label\n{path},a,1\n{path},b,\n{path},c,two\n")
    ds = PairedImageTextDataset(labelled, to_tensor, label_key="label")
    assert ds.bad_rows == {1: "bad_row", 2: "bad_row"} and ds.labels == [1, -1, -1]
    # a row without an image cell: a JSON object without the key, a CSV line with too few cells
    keyless = tmp_path / "keyless.jsonl"
    keyless.write_text('{"filepath": "a.png", "title": "a"}\n{"title": "no image"}\n')
    short = tmp_path / "short.csv"
    short.write_text("title,filepath\na,a.png\nonly a caption\n")
    for path in (keyless, short):
        assert PairedImageTextDataset(path, to_tensor).bad_rows == {1: "bad_row"}


def test_eval_dataset_counts_each_bad_row_once(tiny_corpus, tmp_path):
    from mmcl.eval.datasets import open_dataset

    path, table = damaged_csv(tiny_corpus, tmp_path / "test.csv", "test", bad_encoding={2}, too_long={5})
    with open(path, "ab") as f:  # a second caption of image 0, and a bad one of image 1
        f.write(_bytes(f"{tiny_corpus / table[0]['filepath']},a second caption,-1,k\n"))
        f.write(_bytes(f"{tiny_corpus / table[1]['filepath']},{LATIN1},-1,k\n"))
    data = open_dataset(path)
    source = data.source
    assert len(source.images) == 14 and source.bad_rows == ["bad_encoding", "caption_too_long", "bad_encoding"]
    assert source.captions[0] == [table[0]["title"], "a second caption"] and source.captions[1] == [table[1]["title"]]
    items = [source[i] for i in range(len(source))]
    assert items[-3:] == [(None, "bad_encoding"), (None, "caption_too_long"), (None, "bad_encoding")]
    keyless = tmp_path / "keyless.jsonl"
    keyless.write_text('{"filepath": "a.png", "title": "a"}\n{"title": "no image"}\n')
    assert open_dataset(keyless).source.bad_rows == ["bad_row"]


# --- end to end: training, mmcl eval retrieval, mmcl data convert / inspect ------------------------


def _train(recipe: dict, tmp_path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    script = textwrap.dedent(f"""
        import mmcl
        mmcl.Trainer(mmcl.load_recipe({str(path)!r})).fit()
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    """One epoch (48 rows / batch 8 = 6 steps: every row read once) on the damaged CSV, evaluated at
    the end (the recipe's own evaluator) on a damaged test CSV."""
    tmp = tmp_path_factory.mktemp("badrows")
    train_csv, _ = damaged_csv(tiny_corpus, tmp / "train.csv")
    test_csv, _ = damaged_csv(tiny_corpus, tmp / "test.csv", "test", bad_encoding={2}, too_long={5})
    d = tiny_recipe_dict(tiny_corpus, tmp / "run", steps=6, checkpoint_every=6)
    d["data"]["train"] = str(train_csv)
    d["eval"]["datasets"][0]["path"] = str(test_csv)
    res = _train(d, tmp, "csv")
    return tmp, d, res


def test_csv_with_bad_rows_trains_to_the_end_with_exact_counts(trained):
    tmp, _, res = trained
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped samples: bad_encoding=2, caption_too_long=1" in res.stdout
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["step"] == 6 and summary["skipped"] == {"bad_encoding": 2, "caption_too_long": 1}
    logged = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [x for x in logged if "train/loss" in x][-1]
    assert last["step"] == 6 and last["data/skipped_bad_encoding"] == 2 and last["data/skipped_caption_too_long"] == 1
    # the recipe's evaluator read the damaged test CSV: 14 images, the 2 bad rows counted
    results = {r["task"]: r["metrics"] for r in json.loads((tmp / "run" / "results.json").read_text())}
    assert results["retrieval"]["num_images"] == 14 and results["retrieval"]["num_texts"] == 14
    assert results["retrieval"]["skipped"] == {"bad_encoding": 1, "caption_too_long": 1}


def test_jsonl_with_bad_rows_trains_to_the_end_with_exact_counts(trained, tiny_corpus):
    tmp, d, _ = trained
    path, _ = damaged_jsonl(tiny_corpus, tmp / "train.jsonl")
    d = {**d, "data": {**d["data"], "train": str(path)}, "train": {**d["train"], "output_dir": str(tmp / "jrun")}}
    d["eval"] = {**d["eval"], "datasets": []}
    res = _train(d, tmp, "jsonl")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp / "jrun" / "summary.json").read_text())
    assert summary["step"] == 6
    assert summary["skipped"] == {"bad_encoding": 2, "bad_row": 1, "caption_too_long": 1}


def test_eval_retrieval_convert_and_inspect_on_a_damaged_file(trained, tiny_corpus, capsys):
    tmp, _, res = trained
    assert res.returncode == 0, res.stderr[-3000:]
    test_csv = tmp / "test.csv"
    out = tmp / "retrieval.json"
    args = ["eval", "retrieval", "--model", str(tmp / "run"), "--dataset", str(test_csv), "--device", "cpu"]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num_images"] == 14 and metrics["skipped"] == {"bad_encoding": 1, "caption_too_long": 1}

    train_csv = tmp / "train.csv"
    assert main(["data", "convert", str(train_csv), str(tmp / "shards"), "--no-progress"]) == 0
    assert "wrote 45 samples in 1 shards" in capsys.readouterr().out
    stats = json.loads((tmp / "shards" / "stats.json").read_text())
    assert stats["skipped"] == {"bad_encoding": 2, "caption_too_long": 1}

    jsonl, _ = damaged_jsonl(tiny_corpus, tmp / "inspect.jsonl")
    assert main(["data", "inspect", str(jsonl), "--json", str(tmp / "inspect.json"), "--no-progress"]) == 0
    assert "skipped: bad_encoding=2, bad_row=1, caption_too_long=1" in capsys.readouterr().out
    report = json.loads((tmp / "inspect.json").read_text())
    assert report["images"] == 44 and report["caption_chars"]["max"] < MAX_CAPTION_CHARS
