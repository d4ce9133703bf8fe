"""The command line: help texts, a train + eval smoke run, user errors without tracebacks."""

import json
import subprocess
import sys

import pytest
import yaml

from mmcl.cli import main

from .conftest import tiny_recipe_dict


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mmcl.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        ([], ["train", "eval", "data"]),
        (["train"], ["KEY=VALUE", "train.resume=latest", "train.stop_at_step", "torchrun"]),
        (["eval"], ["zeroshot", "retrieval", "linear-probe", "knn", "compositional", "summarize", "CLIP_benchmark"]),
        (["eval", "run"], ["--checkpoint", "results.json"]),
        (["eval", "zeroshot"], ["--classnames", "--templates", "imagenet1k", "--model-config", "example:"]),
        (["eval", "retrieval"], ["--recall-k", "--caption-key", "--dataset-kind", "example:"]),
        (["eval", "linear-probe"], ["--k-shot", "--weight-decays", "--val", "--train", "example:"]),
        (["eval", "knn"], ["--k", "--temperature", "--train", "example:"]),
        (["eval", "compositional"], ["--image-root", "make-compositional", "example:"]),
        (["eval", "summarize"], ["--format", "csv", "example:"]),
        (["data", "make-compositional"], ["swap_relation", "key column"]),
        (["data", "make-synthetic"], ["--n-train", "never seen in training"]),
    ],
)
def test_help_explains_itself(capsys, args, expected):
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    for text in expected:
        assert text in out


def test_train_then_eval_smoke(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, run)))
    res = run_cli("train", str(recipe), "train.steps=3", "train.lr=5e-4", "eval.every=2")
    assert res.returncode == 0, res.stderr
    assert "samples per step" in res.stdout and "acc1" in res.stdout
    # evaluated in the loop at step 2 and at the end
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["step-0000002.json", "step-0000003.json"]
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if "eval/test/zeroshot/acc1" in x] == [2, 3]
    results = json.loads((run / "results.json").read_text())
    assert {(r["dataset"], r["task"]) for r in results} == {("test", "zeroshot"), ("test", "retrieval")}
    assert results[0]["step"] == 3 and "metrics" in results[0]
    assert (run / "results.md").read_text().count("|") > 10
    (run / "results.json").unlink()
    res = run_cli("eval", str(run))
    assert res.returncode == 0, res.stderr
    again = json.loads((run / "results.json").read_text())
    assert [r["metrics"]["acc1"] for r in again if r["task"] == "zeroshot"] == [
        r["metrics"]["acc1"] for r in results if r["task"] == "zeroshot"
    ]


def test_user_errors_print_one_line_not_a_traceback(tiny_corpus, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, tmp_path / "run")))
    res = run_cli("train", str(recipe), "train.stpes=3")
    assert res.returncode == 2
    assert "mmcl: error: unknown key 'train.stpes' (did you mean 'steps'?)" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("eval", str(tmp_path))
    assert res.returncode == 2 and "not an mmcl run folder" in res.stderr
    res = run_cli("train", str(recipe), "train.precision=fp16", "train.cpu=true")
    assert res.returncode == 2 and "fp16 needs a GPU" in res.stderr


def test_make_synthetic(tmp_path):
    assert (
        main(
            [
                "data",
                "make-synthetic",
                str(tmp_path / "d"),
                "--n-train",
                "5",
                "--n-test",
                "3",
                "--n-novel",
                "2",
                "--image-size",
                "24",
            ]
        )
        == 0
    )
    assert len((tmp_path / "d" / "train.csv").read_text().splitlines()) == 6


def test_make_synthetic_sketch_and_masks(tmp_path):
    import csv

    from PIL import Image

    out = tmp_path / "d"
    args = ["data", "make-synthetic", str(out), "--n-train", "4", "--n-test", "2", "--n-novel", "1"]
    assert main([*args, "--image-size", "24", "--single-fraction", "1", "--sketch", "--masks"]) == 0
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert len(rows) == 4 and {"sketch", "mask"} <= set(rows[0])
    for row in rows:
        with Image.open(out / row["mask"]) as mask:
            values = set(mask.getdata())
        assert mask.mode == "L" and 0 in values and values - {0} == {1 + int(row["label"])}
        with Image.open(out / row["sketch"]) as sketch:
            assert sketch.size == (24, 24)


def test_make_synthetic_many_objects(tmp_path, capsys):
    import csv

    args = ["data", "make-synthetic", str(tmp_path / "d"), "--n-train", "6", "--n-test", "2", "--n-novel", "1"]
    assert main([*args, "--image-size", "24", "--single-fraction", "0", "--max-objects", "5"]) == 0
    rows = list(csv.DictReader((tmp_path / "d" / "train.csv").open()))
    assert all(row["label"] == "-1" for row in rows) and max(row["key"].count("|") for row in rows) >= 4
    with pytest.raises(SystemExit):
        main([*args, "--max-objects", "10"])
    assert "argument --max-objects: invalid choice: 10 (choose from 2, 3, 4, 5, 6, 7, 8, 9)" in capsys.readouterr().err


def test_a_log_file_gets_lines_not_progress_bars(tiny_corpus, tmp_path):
    """Output that is not a terminal (a log file, a pipe) gets one line per log step instead of
    progress-bar redraws, and the throughput line is a line of its own."""
    recipe = tmp_path / "tiny.yaml"
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=3, progress=True, log_every=1)
    data["eval"]["datasets"] = []
    recipe.write_text(yaml.safe_dump(data))
    res = run_cli("train", str(recipe))
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("step ")] == ["1/3", "2/3", "3/3"]
    assert any(ln.startswith("  throughput: ") for ln in lines)
