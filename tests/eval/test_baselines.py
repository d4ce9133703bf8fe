"""`mmcl eval` on a recipe's untrained model (the baseline), group recall@k with `--group-key`, and
the probes' training-set limit shared by the command line and a recipe's evaluation."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

import mmcl
from mmcl.cli import main
from mmcl.errors import ConfigError
from mmcl.eval.adapters import MmclAdapter, load_adapter
from mmcl.eval.metrics import attribute_recall_at_1, group_recall_at_k
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict


def _eval(tmp_path, task, model, *args) -> dict:
    out = tmp_path / f"{task}.json"
    assert main(["eval", task, "--model", str(model), "--output", str(out), "--no-progress", *args]) == 0
    return json.loads(out.read_text())


@pytest.fixture
def recipe_file(tiny_corpus, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, tmp_path / "run", cpu=True)))
    return path


@pytest.fixture(scope="module")
def labels_csv(tiny_corpus, tmp_path_factory):
    """The corpus's labelled images, each captioned from its class name: many captions repeat."""
    names = (tiny_corpus / "classnames.txt").read_text().splitlines()
    rows = []
    for split in ("train", "test"):
        with open(tiny_corpus / f"{split}.csv") as f:
            rows += [r for r in csv.DictReader(f) if int(r["label"]) >= 0]
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title", "label"])
        for r in rows:
            w.writerow([str(tiny_corpus / r["filepath"]), f"a photo of a {names[int(r['label'])]}.", r["label"]])
    return path, len(rows)


def test_group_recall_counts_any_item_of_the_group():
    # 3 images of groups a, a, b; 3 captions: each caption's nearest image is the other image of its group
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    txt = torch.nn.functional.normalize(torch.tensor([[0.8, 0.2], [1.0, -0.1], [-0.2, 1.0]]), dim=1)
    groups = ["a", "a", "b"]
    m = group_recall_at_k(img, txt, groups, groups, ks=(1, 2, 5))
    assert m["image_retrieval_group_recall@1"] == m["text_retrieval_group_recall@1"] == 1.0
    assert m["image_retrieval_group_recall@5"] == 1.0  # k above the number of candidates: all of them
    assert (
        m["image_retrieval_group_recall@1"]
        == attribute_recall_at_1(img, txt, groups, groups)["image_retrieval_attribute_recall@1"]
    )
    # caption 2 (group b) retrieves images 2, 0, 1: a hit at 1; with its group changed to c, never
    m = group_recall_at_k(img, txt, groups, ["a", "a", "c"], ks=(1, 3))
    assert m["image_retrieval_group_recall@1"] == m["image_retrieval_group_recall@3"] == pytest.approx(2 / 3)
    # image 2 (group b) finds no caption of its group among the 3
    assert m["text_retrieval_group_recall@3"] == pytest.approx(2 / 3)


def test_random_init_baseline_from_a_recipe(recipe_file, tiny_corpus, tmp_path):
    """`--model RECIPE.yaml`: the model the recipe's run starts from, untrained and named so."""
    zs = _eval(tmp_path, "zeroshot", recipe_file, "--dataset", str(tiny_corpus / "test.csv"), "--device", "cpu")
    assert (
        zs["model"] == "tiny (random init)" and zs["pretrained"] == "init: vision <- random init; text <- random init"
    )
    assert {"acc1", "acc5", "mean_per_class_recall"} <= set(zs["metrics"])
    # the same weights as the run's step 0 (built with the recipe's seed), whatever the global RNG holds
    torch.manual_seed(123)
    adapter = load_adapter(str(recipe_file), device="cpu")
    assert isinstance(adapter, MmclAdapter) and adapter.name == "tiny (random init)"
    recipe = tiny_recipe_dict(tiny_corpus, tmp_path / "run", cpu=True)
    trainer = mmcl.Trainer(recipe_from_dict(recipe))
    theirs = trainer.unwrapped.state_dict()
    for name, tensor in adapter.model.state_dict().items():
        assert torch.equal(tensor.cpu(), theirs[name].cpu()), name
    with pytest.raises(ConfigError, match="is a recipe, evaluated at its initial weights"):
        load_adapter(str(recipe_file), pretrained="step-0000002")


def test_group_key_from_the_cli(recipe_file, labels_csv, tmp_path, capsys):
    path, n = labels_csv
    ret = _eval(tmp_path, "retrieval", recipe_file, "--dataset", str(path), "--group-key", "label", "--device", "cpu")
    m = ret["metrics"]
    assert m["num_images"] == n and m["duplicate_caption_fraction"] >= 0.5  # captions repeat per class
    for k in (1, 5, 10):
        for side in ("image", "text"):
            group, instance = m[f"{side}_retrieval_group_recall@{k}"], m[f"{side}_retrieval_recall@{k}"]
            assert instance <= group + 1e-6 and group <= 1, (side, k)  # recall@k is a float32 mean
    assert m["image_retrieval_group_recall@1"] == m["image_retrieval_attribute_recall@1"]
    # a caption of a class retrieves its class's images however they are ordered: a hit at 1
    assert m["image_retrieval_group_recall@1"] > m["image_retrieval_recall@1"]
    printed = capsys.readouterr().out
    assert "image_retrieval_group_recall@5" in printed and "text_retrieval_group_recall@10" in printed
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", "retrieval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--group-key GROUP_KEY" in help_text and "image_retrieval_group_recall@k" in help_text


def test_probe_limits_are_the_same_from_the_cli_and_in_a_run(tiny_corpus, tmp_path, capsys):
    """train_max_items (recipe) and --train-max-items (command line) limit the training set alike;
    --max-items limits the test set only."""
    test, train = str(tiny_corpus / "test.csv"), str(tiny_corpus / "train.csv")
    recipe = tiny_recipe_dict(tiny_corpus, tmp_path / "run", cpu=True, steps=2)
    recipe["eval"]["datasets"] = [
        {
            "name": "test",
            "path": test,
            "tasks": ["linear_probe", "knn"],
            "train_path": train,
            "train_max_items": 30,
            "weight_decays": [0.01, 1.0],
            "knn_k": 5,
        }
    ]
    mmcl.Trainer(recipe_from_dict(recipe)).fit()
    in_run = {r["task"]: r["metrics"] for r in json.loads((tmp_path / "run" / "results.json").read_text())}
    common = ["--dataset", test, "--train", train, "--device", "cpu"]
    lp = _eval(
        tmp_path, "linear_probe", tmp_path / "run", *common, "--train-max-items", "30", "--weight-decays", "0.01", "1"
    )
    knn = _eval(tmp_path, "knn", tmp_path / "run", *common, "--train-max-items", "30", "--k", "5")
    for name in ("acc1", "mean_per_class_recall", "weight_decay", "num_train", "num_test"):
        assert lp["metrics"][name] == in_run["linear_probe"][name], name
    assert lp["metrics"]["num_train"] <= 30
    for name in ("acc1", "acc5", "mean_per_class_recall"):
        assert knn["metrics"][name] == pytest.approx(in_run["knn"][name], nan_ok=True), name
    # --max-items is the test set's limit: the probe still trains on the whole training set
    whole = _eval(tmp_path, "linear_probe", tmp_path / "run", *common, "--weight-decays", "0.01", "1")
    limited = _eval(
        tmp_path, "linear_probe", tmp_path / "run", *common, "--weight-decays", "0.01", "1", "--max-items", "8"
    )
    assert limited["metrics"]["num_train"] == whole["metrics"]["num_train"] > lp["metrics"]["num_train"]
    assert limited["metrics"]["num_test"] < whole["metrics"]["num_test"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", "linear_probe", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--train-max-items TRAIN_MAX_ITEMS use only the first N images of --train" in help_text
    assert "--max-items MAX_ITEMS use only the first N images of --dataset" in help_text
