"""evaluation/gpu/bench_gpu.py runs end to end with ``--cpu-smoke`` (tiny sizes, CPU) and writes
every field the GPU run reports: mmcl vs open_clip training, mmcl with FSDP2, retrieval."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"samples_per_s", "samples_per_s_windows", "flops_per_sample", "mfu", "peak_memory_gb", "parameters"}


def test_cpu_smoke_writes_every_field(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "evaluation" / "gpu" / "bench_gpu.py"), "--cpu-smoke", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data) == {"meta", "training", "fsdp", "retrieval"}
    meta = data["meta"]
    assert meta["smoke"] is True and meta["batch"] == 4 and meta["peak_flops"] > 0
    keys = {"device", "model", "precision", "warmup", "steps", "windows", "torch", "open_clip", "date", "command"}
    assert keys <= set(meta)
    training = data["training"]
    for side in ("mmcl", "open_clip"):
        assert set(training[side]) == TRAINING
        assert len(training[side]["samples_per_s_windows"]) == meta["windows"] == 2
        assert training[side]["samples_per_s"] > 0 and training[side]["flops_per_sample"] > 0
        assert 0 < training[side]["mfu"]
    assert training["ratio"] > 0 and len(training["ratio_windows"]) == 2
    assert set(data["fsdp"]) == TRAINING | {"processes"} and data["fsdp"]["samples_per_s"] > 0
    # the same model, sharded or not: the same parameters and FLOPs
    assert data["fsdp"]["parameters"] == training["mmcl"]["parameters"]
    assert data["fsdp"]["flops_per_sample"] == training["mmcl"]["flops_per_sample"]
    ret = data["retrieval"]
    for method in ("mmcl", "bare"):
        assert ret[method]["seconds"] > 0
        assert 0 < ret[method]["metrics"]["image_retrieval_recall@1"] < 1
    # tiled mm + topk and mmcl's streamed metrics agree (no ties in random features)
    assert ret["mmcl"]["metrics"]["image_retrieval_recall@1"] == ret["bare"]["metrics"]["image_retrieval_recall@1"]
    table = out.with_suffix(".md").read_text()
    assert "| mmcl FSDP2, 1 process |" in table and "--cpu-smoke" in table
