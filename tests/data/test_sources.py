"""Every training source trains through a recipe with 2 dataloader workers; wrong keys fail at start-up."""

import json
from collections import Counter

import pytest

import mmcl
from mmcl.data.sources import detect_source
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict
from .corpora import class_folder, hf_dataset, img2dataset_shards, jsonl_file


def recipe(corpus, out, data: dict, **train):
    d = tiny_recipe_dict(corpus, out, **{"steps": 2, "checkpoint_every": 100, "record_samples": True, **train})
    d["eval"]["datasets"] = []
    d["data"].update({"num_workers": 2, **data})
    return recipe_from_dict(d)


def trained_ids(out) -> list[int]:
    return [i for line in (out / "samples.jsonl").read_text().splitlines() for i in json.loads(line)["index"]]


def make_source(kind, corpus, tmp_path):
    if kind == "csv":
        return {"train": str(corpus / "train.csv")}
    if kind == "jsonl":
        return {
            "train": str(jsonl_file(corpus, tmp_path / "train.jsonl")),
            "image_key": "image",
            "caption_key": "captions",
        }
    if kind == "folder":
        return {"train": str(class_folder(corpus, tmp_path / "folder")), "caption_template": "a photo of {c}"}
    if kind == "hf":
        return {"train": str(hf_dataset(corpus, tmp_path / "hf"))}
    if kind == "hf-parquet":
        return {"train": str(hf_dataset(corpus, tmp_path / "pq", parquet=True))}
    if kind == "hf-streaming":
        return {"train": str(hf_dataset(corpus, tmp_path / "hfs")), "streaming": True}
    if kind == "wds":
        img2dataset_shards(corpus, tmp_path / "shards", 4)
        return {"train": str(tmp_path / "shards" / "{00000..00003}.tar")}
    if kind == "wds-json-caption":
        img2dataset_shards(corpus, tmp_path / "shards", 4)
        return {"train": str(tmp_path / "shards"), "caption_key": "json:caption"}
    if kind == "wds-mixed":
        img2dataset_shards(corpus, tmp_path / "a", 2)
        img2dataset_shards(corpus, tmp_path / "b", 2)
        (tmp_path / "b.txt").write_text("b/00000.tar\nb/00001.tar\n")
        return {
            "train": [str(tmp_path / "a" / "{00000..00001}.tar"), str(tmp_path / "b.txt")],
            "resampled": True,
            "epoch_size": 32,
            "weights": [0.75, 0.25],
        }
    raise AssertionError(kind)


KINDS = ["csv", "jsonl", "folder", "hf", "hf-parquet", "hf-streaming", "wds", "wds-json-caption", "wds-mixed"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_source_trains_with_two_workers(kind, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    trainer = mmcl.Trainer(recipe(tiny_corpus, out, make_source(kind, tiny_corpus, tmp_path)))
    trainer.fit()
    ids = trained_ids(out)
    assert len(ids) == 16 and len(set(ids)) == 16  # 2 steps x batch 8, no sample twice
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and summary["skipped"] == {}
    expected_kind = kind.split("-")[0]
    assert f"({expected_kind}" in summary["data"]


def test_detect_source(tiny_corpus, tmp_path):
    assert detect_source(str(tiny_corpus / "train.csv")) == "csv"
    assert detect_source("x/{000..009}.tar") == "wds"
    assert detect_source(["a.tar", "b.tar"]) == "wds"
    assert detect_source(str(class_folder(tiny_corpus, tmp_path / "f"))) == "folder"
    assert detect_source(str(hf_dataset(tiny_corpus, tmp_path / "hf"))) == "hf"
    with pytest.raises(ConfigError, match="valid choices|set data.source"):
        detect_source(str(tmp_path / "nothing.xyz"))


@pytest.mark.parametrize(
    "kind, data, message",
    [
        ("wds", {"caption_key": "caption"}, "has no 'caption' member .*its members are: jpg, json, txt"),
        ("wds", {"caption_key": "json:text"}, "has no field 'text'.*its fields are: caption, key, status, url"),
        ("wds", {"image_key": "png"}, "has no image member \\(png\\).*its members are: jpg, json, txt"),
        ("hf", {"caption_key": "title"}, "column 'title' .*available columns: image, caption"),
        ("csv", {"caption_key": "text"}, "column 'text' .*available columns: filepath, title, label, key"),
    ],
)
def test_wrong_keys_fail_at_start_up_naming_the_available_ones(kind, data, message, tiny_corpus, tmp_path):
    source = make_source(kind, tiny_corpus, tmp_path)
    with pytest.raises(ConfigError, match=message):
        mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", {**source, **data}))


def test_weights_need_resampled_mode(tiny_corpus, tmp_path):
    source = make_source("wds", tiny_corpus, tmp_path)
    with pytest.raises(ConfigError, match="needs data.resampled"):
        recipe(tiny_corpus, tmp_path / "run", {**source, "weights": [1.0]})
    with pytest.raises(ConfigError, match="needs data.epoch_size"):
        recipe(tiny_corpus, tmp_path / "run", {**source, "resampled": True})


def test_streaming_hf_shards_are_all_read_by_two_workers(tiny_corpus, tmp_path):
    import datasets

    from mmcl.data.sources import build_train_data
    from mmcl.recipe import AugmentConfig, DataConfig

    from .corpora import rows

    table = rows(tiny_corpus)
    out = tmp_path / "pq"
    out.mkdir()
    for part in range(4):  # 4 parquet files: 4 stream shards for 2 workers
        chunk = table[part * 12 : (part + 1) * 12]
        datasets.Dataset.from_dict(
            {"image": [str(tiny_corpus / r["filepath"]) for r in chunk], "caption": [r["title"] for r in chunk]}
        ).cast_column("image", datasets.Image()).to_parquet(str(out / f"train-{part}.parquet"))
    cfg = DataConfig(train=str(out), streaming=True, batch_size=5, num_workers=2, augment=AugmentConfig(enabled=False))
    from torchvision import transforms

    data = build_train_data(cfg, transforms.ToTensor(), lambda texts: {}, seed=0)
    assert "4 shards" in data.description
    data.start_epoch(0, 0, {})
    ids = [i for b in data.loader for i in b["index"].tolist()]
    assert len(ids) == 48 and len(set(ids)) == 48


def test_truncated_tar_counts_as_unreadable_and_sources_do_not_share_ids(tiny_corpus, tmp_path):
    from mmcl.data.sources import build_train_data
    from mmcl.data.wds import record_uid
    from mmcl.recipe import AugmentConfig, DataConfig

    shards = img2dataset_shards(tiny_corpus, tmp_path / "s", 2)
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: 512 * 30])  # cut at a member boundary: tarfile itself stops quietly
    assert record_uid(str(shards[0]), "000000000", 0) != record_uid(str(shards[0]), "000000000", 1)
    from torchvision import transforms

    cfg = DataConfig(train=[str(shards[0]), str(shards[1])], batch_size=4, augment=AugmentConfig(enabled=False))
    built = build_train_data(cfg, transforms.ToTensor(), lambda texts: {}, seed=0)
    built.start_epoch(0, 0, {})
    batches = list(built.loader)
    skipped = Counter()
    for b in batches:
        skipped.update(b["skipped"])
    assert skipped["unreadable_shard"] == 1
    assert 24 < sum(b["size"] for b in batches) < 48


def test_a_batch_too_small_to_train_is_dropped_and_counted(tiny_corpus, tmp_path):
    path = tmp_path / "train.csv"
    lines = (tiny_corpus / "train.csv").read_text().splitlines()
    lines[1] = "train/nowhere.png," + lines[1].split(",", 1)[1]  # row 0: missing image
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    # 48 rows / batch 2 = 24 batches; the one holding row 0 has 1 usable sample and is dropped
    data = {"train": str(path), "batch_size": 2, "num_workers": 0, "image_root": str(tiny_corpus)}
    r = recipe(tiny_corpus, out, data, steps=23)
    mmcl.Trainer(r).fit()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"missing_image": 1, "small_batch": 1}
    assert summary["epoch"] == 0


def test_an_epoch_without_usable_batches_stops_the_run(tiny_corpus, tmp_path):
    from mmcl.train.trainer import TrainingError

    path = tmp_path / "train.csv"
    path.write_text("filepath,title\n" + "".join(f"missing{i}.png,a caption\n" for i in range(16)))
    with pytest.raises(TrainingError, match="no batch with 2 or more usable samples.*missing_image=16"):
        mmcl.Trainer(recipe(tiny_corpus, tmp_path / "run", {"train": str(path), "num_workers": 0})).fit()
