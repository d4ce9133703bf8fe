"""Every registered evaluation task runs on a tiny model, through the task registry and through
``mmcl eval TASK``, with the same numbers. The tests are generated from ``mmcl.list_tasks()``: a
task registered without an entry in ``FIXTURES`` fails here."""

from __future__ import annotations

import json
import math

import pytest

import mmcl
from mmcl.cli import main
from mmcl.errors import ConfigError
from mmcl.eval.context import EvalData
from mmcl.eval.tasks import get_task, headline, task_of_record
from mmcl.recipe import EvalDatasetConfig

from ..conftest import MINILM, TINY_BERT, TINY_VIT


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random-init tiny dual encoder saved as a pretrained folder (what `mmcl eval --model` reads)."""
    import torch

    from mmcl.models import create_model
    from mmcl.recipe import ModelConfig, TextConfig, VisionConfig

    cfg = ModelConfig(
        vision=VisionConfig(**TINY_VIT),
        text=TextConfig(config=dict(TINY_BERT), tokenizer=MINILM, max_length=24),
        embed_dim=16,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-model") / "model"
    create_model(cfg).eval().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def compositional_items(ssl_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("comp") / "items.jsonl"
    assert main(["data", "make-compositional", str(ssl_corpus / "test.csv"), str(out)]) == 0
    return out


def _train_test(c, _):
    return {"path": str(c / "test.csv"), "train_path": str(c / "train.csv")}, ["--train", str(c / "train.csv")]


# task name -> (ssl corpus, compositional items file) -> (dataset entry fields, its own `mmcl eval` options);
# the dataset path is --dataset
FIXTURES = {
    "zeroshot": lambda c, _: ({"path": str(c / "test.csv")}, []),
    "retrieval": lambda c, _: ({"path": str(c / "test.csv"), "group_key": "key"}, ["--group-key", "key"]),
    "knn": lambda c, _: ({**_train_test(c, _)[0], "knn_k": 3}, [*_train_test(c, _)[1], "--k", "3"]),
    "linear_probe": lambda c, _: (
        {**_train_test(c, _)[0], "weight_decays": [0.1]},
        [*_train_test(c, _)[1], "--weight-decays", "0.1"],
    ),
    "compositional": lambda c, items: ({"path": str(items), "compositional": str(items)}, []),
    "image_retrieval": lambda c, _: (
        {"path": str(c / "test.csv"), "image2_key": "sketch"},
        ["--image2-key", "sketch"],
    ),
    "dense_probe": lambda c, _: (
        {**_train_test(c, _)[0], "mask_key": "mask", "dense_probe_epochs": 1},
        [*_train_test(c, _)[1], "--mask-key", "mask", "--epochs", "1"],
    ),
    "finetune": lambda c, _: (
        {**_train_test(c, _)[0], "finetune_fractions": [1.0], "finetune_epochs": 1},
        [*_train_test(c, _)[1], "--fractions", "1.0", "--epochs", "1"],
    ),
}


@pytest.mark.parametrize("name", mmcl.list_tasks())
def test_every_task_runs_the_same_from_a_recipe_entry_and_from_the_cli(
    name, model_dir, ssl_corpus, compositional_items, tmp_path
):
    from mmcl.eval.adapters import load_adapter
    from mmcl.eval.checks import check_eval_dataset

    assert name in FIXTURES, f"evaluation task {name!r} has no fixture: add one to FIXTURES in {__file__}"
    task = get_task(name)
    fields, options = FIXTURES[name](ssl_corpus, compositional_items)
    cfg = EvalDatasetConfig(name="fixture", tasks=[name], **fields)
    check_eval_dataset(cfg, "fixture")
    for need in task.needs:
        assert getattr(cfg, need.key) is not None
    adapter = load_adapter(str(model_dir), device="cpu")
    metrics = task.run(adapter, EvalData(cfg, batch_size=8, progress=False), cfg)
    shown = headline(name, metrics)
    assert shown, f"{name}: none of its headline metrics in {sorted(metrics)}"
    assert all(0 <= metrics[m] <= 1 or math.isnan(metrics[m]) for m in shown)
    # `mmcl eval TASK` builds the same entry and runs the same code
    out = tmp_path / "result.json"
    args = ["eval", name, "--model", str(model_dir), "--dataset", fields["path"], "--device", "cpu"]
    assert main([*args, *options, "--batch-size", "8", "--output", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["task"] == task.record_name and task_of_record(record["task"]).name == name
    assert json.dumps(record["metrics"], sort_keys=True) == json.dumps(metrics, sort_keys=True)


def test_declarations_are_checked_before_any_work(ssl_corpus):
    from mmcl.eval.checks import check_eval_dataset

    for name in mmcl.list_tasks():
        task = get_task(name)
        for need in task.needs:
            fields = {"path": str(ssl_corpus / "test.csv"), "train_path": str(ssl_corpus / "train.csv")}
            fields[need.key] = None
            with pytest.raises(ConfigError, match=f"the {name} task needs {need.key}"):
                check_eval_dataset(EvalDatasetConfig(tasks=[name], **fields), "entry")
    text_tasks = sorted(n for n in mmcl.list_tasks() if get_task(n).text_tower)
    assert text_tasks == ["compositional", "retrieval", "zeroshot"]
    with pytest.raises(ConfigError, match=r"\['retrieval', 'zeroshot'\] need a text tower"):
        check_eval_dataset(EvalDatasetConfig(path=str(ssl_corpus / "test.csv")), "e", image_only=True)
    with pytest.raises(ConfigError, match="the image_retrieval task reads csv, jsonl data; .* is a folder source"):
        check_eval_dataset(EvalDatasetConfig(path=str(ssl_corpus), tasks=["image_retrieval"], image2_key="x"), "e")


def test_one_spelling_per_task_and_records_of_either_spelling_read(tmp_path, capsys):
    """Recipes and `mmcl eval` use the registered names; `linear-probe` still parses; result records
    keep CLIP_benchmark's task names, and tables read both."""
    assert task_of_record("linear-probe").name == task_of_record("linear_probe").name == "linear_probe"
    assert task_of_record("zeroshot_classification").name == "zeroshot"
    assert task_of_record("zeroshot_retrieval").name == "retrieval"
    assert task_of_record("something_else") is None
    metrics = {"acc1": 0.5, "acc5": 0.75, "mean_per_class_recall": 0.5, "num_items": 4}
    assert headline("zeroshot", metrics) == headline("zeroshot_classification", metrics) == list(metrics)[:3]
    ret = {f"{d}_retrieval_recall@{k}": 0.5 for d in ("image", "text") for k in (1, 5)}
    assert headline("retrieval", ret) == [
        "image_retrieval_recall@1",
        "text_retrieval_recall@1",
        "image_retrieval_recall@5",
        "text_retrieval_recall@5",
    ]
    # an in-run results.json (registered names) and an `mmcl eval` file (CLIP_benchmark's) in one table
    (tmp_path / "results.json").write_text(
        json.dumps([{"dataset": "d", "task": "zeroshot", "metrics": metrics, "model": "m", "pretrained": "p"}])
    )
    (tmp_path / "d_zeroshot_classification.json").write_text(
        json.dumps({"dataset": "d", "task": "zeroshot_classification", "metrics": metrics, "model": "m"})
    )
    assert main(["eval", "summarize", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.count("| acc5 |") == 2 and "| zeroshot |" in table and "| zeroshot_classification |" in table
    assert "num_items" not in table
