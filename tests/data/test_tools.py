"""`mmcl data convert` and `mmcl data inspect`."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mmcl.cli import main

from .corpora import class_folder, rows


@pytest.fixture
def damaged_csv(tiny_corpus, tmp_path):
    """The tiny train split with one truncated image, one missing image and one empty caption."""
    table = rows(tiny_corpus)
    img = tmp_path / "img"
    shutil.copytree(tiny_corpus / "train", img)
    bad = img / "0000003.png"
    bad.write_bytes(bad.read_bytes()[:100])
    (img / "0000007.png").unlink()
    table[11]["title"] = ""
    path = tmp_path / "train.csv"
    with open(path, "w") as f:
        f.write("filepath,title,label\n")
        for i, r in enumerate(table):
            f.write(f'img/{r["filepath"].split("/")[-1]},"{r["title"]}",{i % 3}\n')
    return path


def test_convert_writes_img2dataset_shards_that_other_readers_accept(damaged_csv, tmp_path, capsys):
    out = tmp_path / "shards"
    assert (
        main(
            [
                "data",
                "convert",
                str(damaged_csv),
                str(out),
                "--shard-size",
                "20",
                "--label-key",
                "label",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "wrote 45 samples in 3 shards" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped"] == {"corrupt_image": 1, "empty_caption": 1, "missing_image": 1}
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 20, "00001.tar": 20, "00002.tar": 5}
    assert not list(out.glob(".*.tmp"))
    # the webdataset library reads them as img2dataset output
    import webdataset as wds

    samples = list(wds.WebDataset(str(out / "{00000..00002}.tar"), shardshuffle=False))
    assert len(samples) == 45
    first = samples[0]
    assert first["__key__"] == "000000000" and {"png", "txt", "json", "cls"} <= set(first)
    meta = json.loads(first["json"])
    assert meta["caption"] == first["txt"].decode() and meta["label"] == 0 and meta["key"] == "000000000"
    original = np.asarray(Image.open(damaged_csv.parent / "img" / "0000000.png").convert("RGB"))
    assert (np.asarray(Image.open(io.BytesIO(first["png"])).convert("RGB")) == original).all()  # bytes kept
    assert main(["data", "convert", str(damaged_csv), str(out), "--no-progress"]) == 2
    assert "already holds shards; choose an empty folder" in capsys.readouterr().err


def test_convert_a_class_folder(tiny_corpus, tmp_path):
    folder = class_folder(tiny_corpus, tmp_path / "folder")
    out = tmp_path / "shards"
    assert main(["data", "convert", str(folder), str(out), "--no-progress"]) == 0
    import webdataset as wds

    samples = list(wds.WebDataset(str(out / "00000.tar"), shardshuffle=False))
    assert len(samples) == 48
    captions = {s["txt"].decode() for s in samples}
    assert captions == {"a photo of a circles.", "a photo of a red squares."}
    assert {s["cls"].decode() for s in samples} == {"0", "1"}


def test_inspect_counts_skips_and_draws_a_grid(damaged_csv, tmp_path, capsys):
    grid, report = tmp_path / "grid.png", tmp_path / "report.json"
    assert (
        main(
            [
                "data",
                "inspect",
                str(damaged_csv),
                "--grid",
                str(grid),
                "--grid-size",
                "6",
                "--json",
                str(report),
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "images: 46" in text and "corrupt_image=1" in text and "missing_image=1" in text
    r = json.loads(report.read_text())
    assert r["images"] == 46 and r["captions"] == 45  # one image has an empty caption
    assert r["labels"]["classes"] == 3
    assert r["caption_words"]["max"] >= r["caption_words"]["median"] >= r["caption_words"]["min"] > 0
    image = Image.open(grid)
    assert image.size == (4 * 160, 2 * (160 + 52))
    pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # not a blank canvas
