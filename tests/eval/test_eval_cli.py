"""`mmcl eval TASK` end to end on a trained mmcl run: every task writes a CLIP_benchmark-shaped
record, and `mmcl eval summarize` tabulates them."""

from __future__ import annotations

import json

import pytest
import yaml

from mmcl.cli import main

from ..conftest import tiny_recipe_dict


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun")
    recipe = out / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, out / "run", steps=2)))
    assert main(["train", str(recipe)]) == 0
    return out / "run"


def _eval(task, run, tmp_path, *args):
    out = tmp_path / f"{task}.json"
    assert main(["eval", task, "--model", str(run), "--output", str(out), "--no-progress", *args]) == 0
    return json.loads(out.read_text())


def test_every_task_from_the_cli(run, tiny_corpus, tmp_path, capsys):
    test, train = str(tiny_corpus / "test.csv"), str(tiny_corpus / "train.csv")
    zs = _eval("zeroshot", run, tmp_path, "--dataset", test)
    assert zs["task"] == "zeroshot_classification" and zs["model"] == "tiny" and zs["pretrained"] == "step-0000002"
    assert zs["dataset"] == "test" and {"acc1", "acc5", "mean_per_class_recall"} <= set(zs["metrics"])
    # the same numbers as the evaluator the recipe ran at the end of training
    in_training = {r["task"]: r["metrics"] for r in json.loads((run / "results.json").read_text())}
    assert zs["metrics"]["acc1"] == in_training["zeroshot"]["acc1"]

    ret = _eval("retrieval", run, tmp_path, "--dataset", test, "--recall-k", "1", "3")
    assert ret["metrics"]["image_retrieval_recall@1"] == in_training["retrieval"]["image_retrieval_recall@1"]
    assert "text_retrieval_recall@3" in ret["metrics"] and ret["metrics"]["num_images"] == 16

    lp = _eval("linear-probe", run, tmp_path, "--dataset", test, "--train", train, "--weight-decays", "0.01", "1")
    assert lp["task"] == "linear_probe" and lp["metrics"]["weight_decay"] in (0.01, 1.0)
    knn = _eval("knn", run, tmp_path, "--dataset", test, "--train", train, "--k", "3")
    assert knn["task"] == "knn" and knn["metrics"]["k"] == 3 and 0 <= knn["metrics"]["acc1"] <= 1

    comp_file = tmp_path / "comp.jsonl"
    assert main(["data", "make-compositional", test, str(comp_file)]) == 0
    comp = _eval("compositional", run, tmp_path, "--dataset", str(comp_file))
    assert comp["task"] == "compositional" and comp["metrics"]["num_items"] > 16
    assert "acc/swap_relation" in comp["metrics"]

    capsys.readouterr()
    assert main(["eval", "summarize", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    for name in ("zeroshot_classification", "zeroshot_retrieval", "linear_probe", "knn", "compositional"):
        assert f"| {name} |" in table
    assert "| text_retrieval_recall@3 |" in table  # every recall@k that was asked for is shown
    assert main(["eval", "summarize", str(tmp_path), "--format", "csv", "--output", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().startswith("model,pretrained,dataset,task,metric,value")


def test_eval_errors_are_one_line(run, tiny_corpus, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--model",
                str(run),
                "--dataset",
                str(tiny_corpus / "test.csv"),
                "--classnames",
                "imagenet21k",
            ]
        )
        == 2
    )
    assert "shipped:" in capsys.readouterr().err
    assert (
        main(["eval", "knn", "--model", str(run), "--dataset", str(tiny_corpus / "test.csv"), "--label-key", "cls"])
        == 2
    )
    assert "available columns: filepath, title, label, key" in capsys.readouterr().err
    assert main(["eval", "summarize", str(tmp_path)]) == 2


def test_recipe_evaluators_knn_linear_probe_compositional(run, tiny_corpus, tmp_path):
    from mmcl.eval import MmclAdapter, evaluate, evaluate_knn, open_dataset
    from mmcl.recipe import EvalConfig, EvalDatasetConfig

    comp = tmp_path / "comp.jsonl"
    assert main(["data", "make-compositional", str(tiny_corpus / "test.csv"), str(comp)]) == 0
    cfg = EvalConfig(
        batch_size=8,
        datasets=[
            EvalDatasetConfig(
                name="test",
                path=str(tiny_corpus / "test.csv"),
                tasks=["knn", "linear_probe", "compositional"],
                train_path=str(tiny_corpus / "train.csv"),
                knn_k=3,
                compositional=str(comp),
            )
        ],
    )
    adapter = MmclAdapter.from_run(run, device="cpu")
    records = {r["task"]: r["metrics"] for r in evaluate(adapter, cfg, progress=False)}
    assert set(records) == {"knn", "linear_probe", "compositional"}
    # the recipe path gives the task function's numbers
    direct = evaluate_knn(
        adapter, open_dataset(tiny_corpus / "train.csv"), open_dataset(tiny_corpus / "test.csv"), k=3, progress=False
    )
    assert records["knn"]["acc1"] == direct["acc1"]
    assert "weight_decay" in records["linear_probe"] and records["compositional"]["num_items"] > 16


def test_recipe_validation_of_probe_tasks(tiny_corpus, tmp_path):
    from mmcl.config import ConfigError, recipe_from_dict  # the compatibility module checks in full

    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    d["eval"]["datasets"][0]["tasks"] = ["knn"]
    with pytest.raises(ConfigError, match="the knn task needs train_path"):
        recipe_from_dict(d)
    d["eval"]["datasets"][0]["tasks"] = ["compositional"]
    with pytest.raises(ConfigError, match="the compositional task needs compositional"):
        recipe_from_dict(d)
    d["eval"]["datasets"][0]["tasks"] = ["kNN"]
    with pytest.raises(ConfigError, match="valid choices: zeroshot, retrieval, knn, linear_probe, compositional"):
        recipe_from_dict(d)
