"""Real 2-process runs (torchrun, gloo): ranks train on disjoint samples that cover the epoch."""

import json
import subprocess
import sys

import pytest
import yaml

from mmcl.data.wds import record_uid

from ..conftest import tiny_recipe_dict
from .corpora import img2dataset_shards, rows


def torchrun(recipe_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "mmcl.cli",
            "train",
            str(recipe_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def write(corpus, tmp_path, data, steps):
    d = tiny_recipe_dict(corpus, tmp_path / "run", steps=steps, checkpoint_every=100, record_samples=True)
    d["eval"]["datasets"] = []
    d["data"].update({"batch_size": 4, "num_workers": 2, **data})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def epoch_ids(run, epoch=0):
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    return [i for x in lines if x["epoch"] == epoch for i in x["index"]]


@pytest.mark.parametrize("kind", ["csv", "wds"])
def test_two_ranks_see_disjoint_samples_covering_the_epoch(kind, tiny_corpus, tmp_path):
    if kind == "wds":
        shards = img2dataset_shards(tiny_corpus, tmp_path / "shards", 4)  # 4 x 12 samples: one per reader
        data = {"train": str(tmp_path / "shards" / "{00000..00003}.tar")}
        everything = {record_uid(str(s), f"{s.stem}{j:04d}") for s in shards for j in range(12)}
    else:
        data = {}
        everything = set(range(len(rows(tiny_corpus))))
    # 48 samples / (4 per rank x 2 ranks) = 6 steps per epoch
    torchrun(write(tiny_corpus, tmp_path, data, steps=6))
    ids = epoch_ids(tmp_path / "run")
    assert len(ids) == 48 and set(ids) == everything


def test_uneven_shards_end_the_epoch_on_both_ranks_together(tiny_corpus, tmp_path):
    """5 shards for 4 readers: one reader has twice the data. The ranks still stop each epoch at the
    same step (no hang) and never train on a sample twice within an epoch."""
    img2dataset_shards(tiny_corpus, tmp_path / "shards", 5)
    res = torchrun(write(tiny_corpus, tmp_path, {"train": str(tmp_path / "shards")}, steps=12))
    assert "5 shards" in res.stdout
    for epoch in (0, 1):
        ids = epoch_ids(tmp_path / "run", epoch)
        assert ids and len(ids) == len(set(ids))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 12 and summary["epoch"] >= 1
