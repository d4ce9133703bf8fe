"""evaluation/finetune/two_trainers.py at a tiny size: both trainers see the same batches and give the
same loss curve and weights, and the result file names what the README reports."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # the README's "within float noise"; the measured difference is 0

pytest.importorskip("open_clip_train")


@pytest.fixture(scope="module")
def two_trainers():
    spec = importlib.util.spec_from_file_location("two_trainers", ROOT / "evaluation" / "finetune" / "two_trainers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_gives_the_same_curve_on_both_trainers(two_trainers, tmp_path):
    # 16 images in batches of 8: 2 steps an epoch, so 6 steps cross two epoch boundaries on both sides;
    # 3 windows of 2 steps alternate mmcl-first, open_clip-first, mmcl-first
    argv = ["--steps", "6", "--window", "2", "--n-train", "16", "--batch-size", "8", "--warmup", "2"]
    two_trainers.main([*argv, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out" / "tt")])
    result = json.loads((tmp_path / "out" / "tt.json").read_text())
    assert (tmp_path / "out" / "tt.png").stat().st_size > 0

    assert result["initial_weights_max_abs_diff"] == 0.0
    assert result["weight_decay_rule"]["differ"] == []
    assert result["batches_identical"] and result["batches_compared"] == 6
    loss = result["loss"]
    assert len(loss["mmcl"]) == len(loss["open_clip"]) == len(loss["difference"]) == 6
    assert all(math.isfinite(x) for x in loss["mmcl"])
    assert result["max_abs_loss_diff"] <= TOLERANCE
    assert max(abs(d) for d in loss["difference"]) == result["max_abs_loss_diff"]
    assert result["final_weights_max_abs_diff"] <= TOLERANCE
    assert result["max_abs_lr_diff"] <= 1e-12 * result["settings"]["lr"]
    tp = result["throughput"]
    assert tp["windows"] == 3 and tp["windows_timed"] == 2
    assert tp["mmcl_samples_per_s"] > 0 and tp["open_clip_samples_per_s"] > 0
    ratio = tp["mmcl_samples_per_s"] / tp["open_clip_samples_per_s"]
    assert tp["ratio_mmcl_over_open_clip"] == pytest.approx(ratio)
    assert result["peak_rss_gb_both_in_one_process"] > 0
    assert result["machine"]["cores"] and result["command"].startswith("python evaluation/finetune/two_trainers.py")
