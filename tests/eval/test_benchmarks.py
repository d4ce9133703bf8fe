"""Benchmarks by name: every registered benchmark builds from a tiny copy in its own layout
(``benchmark_fixtures.WRITERS``, written here, no network), gives one line naming its layout when
its files are missing, and ``mmcl eval TASK --dataset NAME --data-root DIR`` runs on it."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mmcl.cli import main
from mmcl.data.benchmarks import build_benchmark, get_benchmark, list_benchmarks
from mmcl.data.benchmarks.compositional import CompositionalSet
from mmcl.errors import ConfigError
from mmcl.eval.classnames import resolve_prompts

from .benchmark_fixtures import WRITERS


def _name(pattern: str) -> str:
    return "wds_cifar10" if pattern == "wds_*" else pattern


@pytest.mark.parametrize("pattern", list_benchmarks())
def test_every_benchmark_builds_from_its_own_layout(pattern, tmp_path):
    assert pattern in WRITERS, f"benchmark {pattern!r} has no fixture writer in tests/eval/benchmark_fixtures.py"
    if pattern == "pcam":
        pytest.importorskip("h5py")
    expected = WRITERS[pattern](tmp_path)
    name = _name(pattern)
    data = build_benchmark(name, tmp_path)
    assert data.name == get_benchmark(name).name
    if "items" in expected:
        assert isinstance(data, CompositionalSet) and len(data.items) == expected["items"]
        assert all(p.is_file() for p in data.images)
        return
    items = [data.source[i] for i in range(len(data.source))] if hasattr(data.source, "__len__") else list(data.source)
    assert all(isinstance(it, dict) for it in items), [it for it in items if not isinstance(it, dict)]
    if "captions" in expected:
        assert data.dataset_type == "retrieval" and [it["captions"] for it in items] == expected["captions"]
        return
    assert [it["label"] for it in items] == expected["labels"]
    names, templates = resolve_prompts(data)
    assert len(names) > max(expected["labels"]) and templates
    if "classnames" in expected:
        assert names == expected["classnames"]


@pytest.mark.parametrize("pattern", list_benchmarks())
def test_missing_files_are_one_line_naming_the_layout(pattern, tmp_path):
    name = _name(pattern)
    with pytest.raises(ConfigError) as e:
        build_benchmark(name, tmp_path / "empty")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{get_benchmark(name).name}:") and "expected under" in message


def test_at_least_25_benchmarks_and_the_issue_list():
    wanted = (
        "imagenet1k imagenetv2 imagenet_sketch imagenet-a imagenet-r objectnet cifar10 cifar100 stl10 mnist svhn "
        "eurosat pets flowers dtd food101 cars fgvc_aircraft sun397 country211 gtsrb resisc45 pcam renderedsst2 "
        "caltech101 voc2007 fer2013 mscoco_captions flickr30k flickr8k"
    ).split()
    assert set(wanted) <= set(list_benchmarks()) and len(list_benchmarks()) >= 25
    assert get_benchmark("imagenet-sketch").name == "imagenet_sketch"  # the spelling in the issue
    assert get_benchmark("wds/vtab-cifar100").name == "wds_vtab-cifar100"  # CLIP_benchmark's spelling


def test_splits_languages_and_names_are_checked(tmp_path):
    WRITERS["cifar10"](tmp_path)
    assert len(build_benchmark("cifar10", tmp_path, split="train").source) == 5
    with pytest.raises(ConfigError, match="cifar10: no split 'val'; valid choices: test, train"):
        build_benchmark("cifar10", tmp_path, split="val")
    with pytest.raises(ConfigError, match="'cifar11' is not a benchmark; valid choices: caltech101"):
        build_benchmark("cifar11", tmp_path)
    with pytest.raises(ConfigError, match="mscoco_captions: no captions in language 'de'"):
        build_benchmark("mscoco_captions", tmp_path, language="de")
    with pytest.raises(ConfigError, match="cars: no automatic download; get it from https://pytorch.org"):
        build_benchmark("cars", tmp_path, download=True)
    # a partial copy of a folder benchmark whose classes are only known by count
    (tmp_path / "country211" / "test" / "AD").mkdir(parents=True)
    with pytest.raises(ConfigError, match="<211 class folders> .found 1."):
        build_benchmark("country211", tmp_path)


def test_cli_names_the_layout_and_the_task(tmp_path, capsys):
    args = ["eval", "zeroshot", "--model", "nowhere", "--dataset"]
    assert main([*args, "cifar10"]) == 2  # a benchmark name without --data-root
    assert "--dataset cifar10 is a benchmark: pass --data-root DIR" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    assert main([*args, "cifar10", "--data-root", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cifar-10-batches-py/test_batch not found" in err and "--download" in err
    assert main([*args, "mscoco_captions", "--data-root", str(tmp_path / "c")]) == 2
    assert "mscoco_captions is a retrieval benchmark: run it with mmcl eval retrieval" in capsys.readouterr().err


def test_voc_objects_are_cropped(tmp_path):
    WRITERS["voc2007"](tmp_path)
    data = build_benchmark("voc2007", tmp_path)
    left, right = (data.source[i]["image"] for i in range(2))
    assert left.size == right.size == (8, 8)
    assert left.getpixel((4, 4))[0] > 150 and right.getpixel((4, 4))[2] > 150  # red dog, blue monitor


def test_imagenet_subsets_name_their_200_classes(tmp_path):
    WRITERS["imagenet-r"](tmp_path)
    names, templates = resolve_prompts(build_benchmark("imagenet-r", tmp_path))
    assert len(names) == 200 and names[0] == "goldfish" and len(templates) == 80


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    """A tiny trained mmcl run (the `--model RUN` of the issue's contract)."""
    import yaml

    from ..conftest import tiny_recipe_dict

    out = tmp_path_factory.mktemp("benchrun")
    recipe = out / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, out / "run", steps=2)))
    assert main(["train", str(recipe)]) == 0
    return out / "run"


def test_zeroshot_cifar10_by_name_on_a_run(run, tmp_path, capsys):
    """The contract: `mmcl eval zeroshot --model RUN --dataset cifar10 --data-root DIR --output res.json`."""
    WRITERS["cifar10"](tmp_path / "cifar")
    out = tmp_path / "res.json"
    args = ["eval", "zeroshot", "--model", str(run), "--dataset", "cifar10", "--data-root", str(tmp_path / "cifar")]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == "cifar10" and record["task"] == "zeroshot_classification"
    assert record["language"] == "en" and record["model"] == "tiny"
    m = record["metrics"]
    assert m["num_items"] == 3 and m["num_classes"] == 10 and m["num_templates"] == 18 and 0 <= m["acc1"] <= 1
    assert "| cifar10 | zeroshot_classification | acc1 |" in capsys.readouterr().out
    # knn reads the benchmark's training split from the same root
    knn = tmp_path / "knn.json"
    assert main(["eval", "knn", "--model", str(run), "--dataset", "cifar10", "--data-root", str(tmp_path / "cifar"),
                 "--k", "2", "--output", str(knn), "--no-progress"]) == 0  # fmt: skip
    assert json.loads(knn.read_text())["metrics"]["k"] == 2


def test_a_suite_of_benchmarks_on_a_tiny_model(run, tmp_path, capsys):
    """`mmcl eval suite` runs (benchmark, task) pairs read by name, reports a missing one in one line
    and goes on, and writes each result and the grouped table in markdown, CSV and HTML."""
    root = tmp_path / "data"
    for name in ("cifar10", "mnist", "stl10", "flickr8k", "sugar_crepe", "winoground"):
        WRITERS[name](root / name)
    (tmp_path / "suite.yaml").write_text(
        "name: tiny\n"
        "entries:\n"
        "  - {benchmark: cifar10, task: zeroshot, group: classification}\n"
        "  - {benchmark: mnist, task: zeroshot, group: classification}\n"
        "  - {benchmark: stl10, task: knn, group: classification, options: {train_split: test, knn_k: 1}}\n"
        "  - {benchmark: cifar100, task: zeroshot, group: classification}\n"  # no files: reported, not run
        "  - {benchmark: flickr8k, task: retrieval, group: retrieval}\n"
        "  - {benchmark: sugar_crepe, task: compositional, group: compositional, metric: macro_acc}\n"
        "  - {benchmark: winoground, task: compositional, group: compositional, metric: group_score}\n"
    )
    out = tmp_path / "out"
    args = ["eval", "suite", str(tmp_path / "suite.yaml"), "--model", str(run), "--data-root", str(root)]
    assert main([*args, "--output", str(out), "--no-progress", "--batch-size", "8"]) == 1  # one entry did not run
    captured = capsys.readouterr()
    assert (
        "cifar100/zeroshot did not run: cifar100: " in captured.err
        and "cifar-100-python/test not found" in captured.err
    )
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "cifar10_zeroshot_classification.json",
        "flickr8k_zeroshot_retrieval.json",
        "mnist_zeroshot_classification.json",
        "stl10_knn.json",
        "sugar_crepe_compositional.json",
        "summary.csv",
        "summary.html",
        "summary.md",
        "winoground_compositional.json",
    ]
    table = (out / "summary.md").read_text()
    assert table == captured.out[: len(table)]
    rows = {tuple(r[:2]): r[4] for r in csv.reader(io.StringIO((out / "summary.csv").read_text()))}
    cifar = json.loads((out / "cifar10_zeroshot_classification.json").read_text())["metrics"]["acc1"]
    mnist = json.loads((out / "mnist_zeroshot_classification.json").read_text())["metrics"]["acc1"]
    stl = json.loads((out / "stl10_knn.json").read_text())["metrics"]["acc1"]
    assert rows[("classification", "cifar100")] == ""
    assert rows[("classification", "average")] == f"{100 * (cifar + mnist + stl) / 3:.2f} (3/4)"
    assert rows[("retrieval", "flickr8k")] and rows[("compositional", "winoground")]
    assert "<table>" in (out / "summary.html").read_text()


def test_open_dataset_reads_benchmarks_by_kind(tmp_path):
    from mmcl.data.sources import open_dataset

    WRITERS["mnist"](tmp_path / "mnist")
    data = open_dataset(tmp_path / "mnist", kind="mnist", max_items=2, name="digits")
    assert data.name == "digits" and len(data.source) == 2 and data.info["classnames"] == "mnist"
    WRITERS["winoground"](tmp_path / "wg")
    with pytest.raises(ConfigError, match="winoground is a compositional benchmark: the compositional task reads it"):
        open_dataset(tmp_path / "wg", kind="winoground")


def test_download_only_when_asked(tmp_path, monkeypatch, capsys):
    """`--download` calls the benchmark's downloader (torchvision's for CIFAR-10, faked here: no network)
    when files are missing; without it a missing file is an error and nothing is fetched."""
    import torchvision.datasets as tvd

    import mmcl.eval.adapters as adapters

    from .benchmark_fixtures import ColourModel

    calls = []

    def fake_cifar10(root, download=False, train=True):
        calls.append((root, download, train))
        WRITERS["cifar10"](tmp_path / "c")

    monkeypatch.setattr(tvd, "CIFAR10", fake_cifar10)
    monkeypatch.setattr(adapters, "load_adapter", lambda *a, **k: ColourModel())
    args = ["eval", "zeroshot", "--model", "x", "--dataset", "cifar10", "--data-root", str(tmp_path / "c")]
    assert main([*args, "--no-progress"]) == 2 and calls == []
    err = capsys.readouterr().err  # the folder is not there: one line naming the layout
    assert err.count("\n") == 1 and f"cifar10: {tmp_path / 'c'} not found; expected under" in err
    assert "cifar-10-batches-py/{data_batch_1..5,test_batch} (torchvision's CIFAR-10) (--download fetches it)" in err
    out = tmp_path / "r.json"
    assert main([*args, "--download", "--output", str(out), "--no-progress"]) == 0
    assert calls == [(str(tmp_path / "c"), True, False)]  # once: the copy is then complete
    assert main([*args, "--download", "--output", str(out), "--no-progress"]) == 0 and len(calls) == 1
    assert json.loads(out.read_text())["metrics"]["num_items"] == 3


def test_a_recipe_entry_downloads_a_benchmark_only(tmp_path):
    from mmcl.eval.checks import check_eval_dataset
    from mmcl.recipe import EvalDatasetConfig
    from mmcl.recipe.validate import validate_eval_dataset

    missing = str(tmp_path / "not-yet")
    entry = EvalDatasetConfig(name="c10", kind="cifar10", path=missing, tasks=["zeroshot"], download=True)
    validate_eval_dataset(entry, "eval.datasets[0]")  # the folder is fetched by the run, not looked for now
    with pytest.raises(ConfigError, match=r"eval.datasets\[0\].path: not found"):
        validate_eval_dataset(EvalDatasetConfig(kind="cifar10", path=missing, tasks=["zeroshot"]), "eval.datasets[0]")
    csv_entry = EvalDatasetConfig(kind="csv", path=missing, tasks=["retrieval"], download=True)
    with pytest.raises(ConfigError, match=r"e.download: only a benchmark fetches its files .* kind is csv"):
        check_eval_dataset(csv_entry, "e")


@pytest.mark.parametrize("name", ["mscoco_captions", "flickr30k", "flickr8k"])
def test_retrieval_by_name_from_the_cli(name, tmp_path, monkeypatch):
    """Each caption names its image's colour, so every recall@1 is 1 (the colour model's similarities)."""
    import mmcl.eval.adapters as adapters

    from .benchmark_fixtures import ColourModel

    monkeypatch.setattr(adapters, "load_adapter", lambda *a, **k: ColourModel())
    WRITERS[name](tmp_path / name)
    out = tmp_path / "r.json"
    args = ["eval", "retrieval", "--model", "x", "--dataset", name, "--data-root", str(tmp_path / name)]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == name and record["task"] == "zeroshot_retrieval" and record["language"] == "en"
    m = record["metrics"]
    assert m["num_texts"] == 3 and m["image_retrieval_recall@1"] == 1.0 and m["text_retrieval_recall@1"] == 1.0
