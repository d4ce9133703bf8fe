"""Multilingual evaluation: translated class names and templates where CLIP_benchmark has them,
retrieval in Crossmodal-3600's, Multi30k's and XTD10's files, and the language in every record."""

from __future__ import annotations

import json

import pytest

from mmcl.cli import main
from mmcl.data.benchmarks import build_benchmark, normalize_language
from mmcl.errors import ConfigError
from mmcl.eval.classnames import resolve_list, resolve_prompts, shipped_languages

from .benchmark_fixtures import WRITERS, ColourModel, write


def test_shipped_languages_and_codes():
    assert shipped_languages("classnames") == ["en", "ar", "it", "ja", "zh"]
    assert shipped_languages("templates") == ["en", "ar", "it", "ja", "zh"]
    assert normalize_language("cn") == "zh" and normalize_language("JP") == "ja" and normalize_language(None) == "en"
    for lang, first in {"it": "una tinca", "zh": "丁鲷", "ja": "テンチ", "ar": "سمك التنش"}.items():
        names = resolve_list("imagenet1k", "classnames", None, lang)
        assert len(names) == 1000 and names[0] == first
        assert all("{c}" in t for t in resolve_list("imagenet1k", "templates", None, lang))
    assert resolve_list("imagenet1k", "classnames", None, "cn")[1] == "金鱼"  # CLIP_benchmark's code
    with pytest.raises(ConfigError, match=r"classnames 'cifar10': no 'it' list shipped \(languages: en\)"):
        resolve_list("cifar10", "classnames", None, "it")


def test_benchmark_class_names_follow_the_language(tmp_path):
    WRITERS["imagenet-r"](tmp_path / "r")
    WRITERS["cifar10"](tmp_path / "c")
    names, templates = resolve_prompts(build_benchmark("imagenet-r", tmp_path / "r"), language="it")
    assert len(names) == 200 and names[0] == "un pesce rosso" and templates[0] == "una brutta foto di {c}"
    names, templates = resolve_prompts(build_benchmark("imagenet1k", _imagenet(tmp_path)), language="zh")
    assert names[0] == "丁鲷" and len(templates) == 80
    with pytest.raises(ConfigError, match="no 'it' list shipped"):
        resolve_prompts(build_benchmark("cifar10", tmp_path / "c"), language="it")
    # the data's own class names (a benchmark's annotation files) are used as they are
    WRITERS["food101"](tmp_path / "f")
    names, templates = resolve_prompts(build_benchmark("food101", tmp_path / "f"), language="ja")
    assert names == ["apple pie", "waffles"] and len(templates) == 37  # ImageNet's Japanese prompts


def _imagenet(tmp_path):
    WRITERS["imagenet1k"](tmp_path / "in")
    return tmp_path / "in"


@pytest.mark.parametrize(
    "name, language, expected",
    [
        ("crossmodal3600", "de", [["ein rotes Ding"], ["ein blaues Ding"]]),
        ("multi30k", "de", [["ein rotes Ding"], ["ein blaues Ding"]]),
        ("multilingual_mscoco_captions", "jp", [["赤いもの"], ["青いもの"]]),
        ("flickr30k", "zh", [["红色的东西"], ["蓝色的东西"]]),
        ("flickr8k", "cn", [["红色的东西"], ["蓝色的东西"]]),
    ],
)
def test_captions_in_the_language(name, language, expected, tmp_path):
    WRITERS[name](tmp_path)
    data = build_benchmark(name, tmp_path, language=language)
    assert [data.source[i]["captions"] for i in range(len(data.source))] == expected
    assert data.info["language"] == normalize_language(language)
    with pytest.raises(ConfigError, match=f"{name}: no captions in language 'xx'"):
        build_benchmark(name, tmp_path, language="xx")


def test_multilingual_zeroshot_and_retrieval_record_the_language(tmp_path, monkeypatch):
    import mmcl.eval.adapters as adapters

    monkeypatch.setattr(adapters, "load_adapter", lambda *a, **k: ColourModel())
    WRITERS["crossmodal3600"](tmp_path / "xm")
    WRITERS["imagenet-a"](tmp_path / "ina")
    base = ["--model", "colour", "--no-progress", "--data-root"]
    out = tmp_path / "xm.json"
    assert main(["eval", "retrieval", "--dataset", "crossmodal3600", *base, str(tmp_path / "xm"),
                 "--language", "de", "--output", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["language"] == "de" and record["dataset"] == "crossmodal3600"
    assert record["metrics"]["num_texts"] == 2 and record["metrics"]["image_retrieval_recall@1"] == 1.0
    write(tmp_path / "one.txt", "una foto di {c}.\n")
    out = tmp_path / "ina.json"
    assert main(["eval", "zeroshot", "--dataset", "imagenet-a", *base, str(tmp_path / "ina"), "--language", "it",
                 "--templates", str(tmp_path / "one.txt"), "--output", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["language"] == "it" and record["metrics"]["num_classes"] == 200
    assert record["metrics"]["num_templates"] == 1


def test_in_run_records_carry_the_language(tmp_path):
    from mmcl.eval import evaluate
    from mmcl.recipe import EvalConfig, EvalDatasetConfig

    WRITERS["multi30k"](tmp_path)
    entry = EvalDatasetConfig(name="m30k", kind="multi30k", path=str(tmp_path), tasks=["retrieval"], language="de")
    (record,) = evaluate(ColourModel(), EvalConfig(batch_size=4, datasets=[entry]), progress=False)
    assert record["language"] == "de" and record["metrics"]["num_texts"] == 2
