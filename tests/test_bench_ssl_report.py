"""evaluation/ssl/bench_ssl.py's report: the ratios, the paired per-seed intervals and the losses it names."""

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ssl", ROOT / "evaluation" / "ssl" / "bench_ssl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(arm, seed, linear, knn, speed, loss):
    return {
        "arm": arm,
        "seed": seed,
        "linear_acc1": linear,
        "knn_acc1": knn,
        "samples_per_s": speed,
        "peak_rss_mib": 1000.0,
        "loss": loss,
    }


def test_report_gives_ratios_paired_intervals_and_losses(bench):
    hcl = {"name": "hcl", "kwargs": {"beta": 0.5, "tau_plus": 0.0, "temperature": 0.2}}
    nt = {"name": "lightly.loss.NTXentLoss", "kwargs": {"temperature": 0.2}}
    mine = [0.50, 0.53, 0.52]
    theirs = [0.49, 0.51, 0.52]  # differences +1, +2, 0 points: mean 1, sd 1
    results = [row("mmcl", s, m, 0.4, 330.0, hcl) for s, m in enumerate(mine)]
    results += [row("lightly", s, t, 0.4, 300.0, nt) for s, t in enumerate(theirs)]
    args = argparse.Namespace(arms=["mmcl", "lightly"], steps=300, seeds=[0, 1, 2], probe_test_items=10000)
    machine = {"cpu": "x", "torch_threads": 2, "gemm_peak_gflops": 100.0}
    text = bench.write_report(results, machine, args, "python evaluation/ssl/bench_ssl.py")

    ratio_line = next(line for line in text.splitlines() if line.startswith("| **mmcl / lightly**"))
    assert ratio_line.split(" | ")[1:4] == [f"{sum(mine) / sum(theirs):.3f}", "1.000", "1.100"]
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert f"- linear probe acc1: +1.00 [{1 - half:+.2f}, {1 + half:+.2f}]; per seed +1.0, +2.0, +0.0" in text
    assert "- kNN acc1: +0.00 [+0.00, +0.00]" in text
    loss_line = 'The mmcl arm\'s loss: `{"kwargs": {"beta": 0.5, "tau_plus": 0.0, "temperature": 0.2}, "name": "hcl"}`'
    assert loss_line in text
    assert "The lightly arm's loss: `" in text and "NTXentLoss" in text


def test_arm_loss_names_the_recipe_loss_for_mmcl_only(bench):
    import mmcl

    recipe = mmcl.load_recipe(ROOT / bench.RECIPE, ["train.steps=20"])
    assert bench.arm_loss("mmcl", recipe) == {"name": recipe.loss.name, "kwargs": dict(recipe.loss.kwargs)}
    assert bench.arm_loss("lightly", recipe)["kwargs"] == {"temperature": recipe.loss.kwargs["temperature"]}
    assert bench.arm_loss("random", recipe) is None


def test_report_from_pools_the_seeds_of_several_runs(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # main() moves to the repository; this puts the cwd back afterwards
    hcl = {"name": "hcl", "kwargs": {"temperature": 0.2}}
    machine = {"cpu": "x", "torch_threads": 2, "gemm_peak_gflops": 180.0}
    files = []
    for i, seeds in enumerate([(0, 1), (2, 3)]):
        rows = [row(a, s, 0.5 + 0.01 * (a == "mmcl") * s, 0.4, 300.0, hcl) for s in seeds for a in ("mmcl", "lightly")]
        report = {"recipe": bench.RECIPE, "steps": 300, "machine": machine | {"gemm_peak_gflops": 180.0 + 10 * i}}
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(report | {"results": rows}))
    out = tmp_path / "pooled"
    monkeypatch.setattr(sys, "argv", ["bench_ssl.py", "--report-from", *map(str, files), "--out", str(out)])
    bench.main()
    text = out.with_suffix(".md").read_text()
    assert "seeds [0, 1, 2, 3]" in text and "GEMM peak 180-190 GFLOP/s" in text
    assert "- linear probe acc1: +1.50 [" in text and "per seed +0.0, +1.0, +2.0, +3.0" in text
    pooled = json.loads(out.with_suffix(".json").read_text())
    assert len(pooled["results"]) == 8 and pooled["pooled_from"] == [str(f) for f in files]

    # one (arm, seed) in two files, or files of different experiments, are refused by name
    monkeypatch.setattr(sys, "argv", ["bench_ssl.py", "--report-from", str(files[0]), str(files[0])])
    with pytest.raises(SystemExit, match="arm 'mmcl' seed 0 is in more than one file"):
        bench.main()
    other = json.loads(files[1].read_text()) | {"probe_test_items": 0}  # a file without the key matches any
    files[1].write_text(json.dumps(other))
    monkeypatch.setattr(sys, "argv", ["bench_ssl.py", "--report-from", *map(str, files), "--out", str(out)])
    bench.main()
    assert "probes on 5000 training and all unseen test items" in out.with_suffix(".md").read_text()
    other |= {"steps": 500}
    files[1].write_text(json.dumps(other))
    monkeypatch.setattr(sys, "argv", ["bench_ssl.py", "--report-from", *map(str, files)])
    with pytest.raises(SystemExit, match="the files differ in 'steps'"):
        bench.main()
