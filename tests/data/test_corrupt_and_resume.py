"""A damaged corpus trains to completion with exact skip counts; a killed run resumes and trains on
every sample of the epoch exactly once."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from mmcl.data.synthetic import make_corpus
from mmcl.data.wds import record_uid
from mmcl.recipe import SyntheticConfig

from ..conftest import tiny_recipe_dict
from .corpora import img2dataset_shards, rows

TRUNCATED = {17, 61}  # 2% of 100
EMPTY = {5, 40, 88}


@pytest.fixture(scope="module")
def corpus100(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes100")
    make_corpus(SyntheticConfig(root=str(root), n_train=100, n_test=4, n_novel=4, image_size=32), progress=False)
    return root


def run_recipe(corpus, out, data, **train):
    d = tiny_recipe_dict(corpus, out, **{"checkpoint_every": 100, "record_samples": True, **train})
    d["eval"]["datasets"] = []
    d["data"].update(data)
    return d


def train(d, tmp_path, prelude=""):
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(d))
    script = textwrap.dedent(prelude) + f"\nimport mmcl\nmmcl.Trainer(mmcl.load_recipe({str(path)!r})).fit()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)


def test_corrupted_shards_train_to_completion_with_exact_skip_counts(corpus100, tmp_path):
    def damage(i, jpg):
        return jpg[: len(jpg) // 2] if i in TRUNCATED else jpg

    img2dataset_shards(corpus100, tmp_path / "shards", 5, captions={i: "  " for i in EMPTY}, damage=damage)
    (tmp_path / "shards" / "00005.tar").write_bytes(b"this is not a tar file" * 100)  # one unreadable shard
    # 95 usable samples / batch 5 = 19 steps: exactly one epoch
    d = run_recipe(corpus100, tmp_path / "run", {"train": str(tmp_path / "shards"), "batch_size": 5}, steps=19)
    res = train(d, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped samples: corrupt_image=2, empty_caption=3, unreadable_shard=1" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == {"corrupt_image": 2, "empty_caption": 3, "unreadable_shard": 1}
    assert summary["step"] == 19
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["data/skipped_corrupt_image"] == 2


def test_corrupted_csv_corpus_with_two_workers(corpus100, tmp_path):
    table = rows(corpus100)
    for i in TRUNCATED:
        path = corpus100 / table[i]["filepath"]
        data = path.read_bytes()
        copy = tmp_path / "img" / f"{i}.png"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(data[: len(data) // 2])
        table[i]["filepath"] = str(copy)
    for i in EMPTY:
        table[i]["title"] = ""
    table[70]["filepath"] = "nowhere.png"
    for r in table:
        if not r["filepath"].startswith("/"):
            r["filepath"] = str(corpus100 / r["filepath"])
    with open(tmp_path / "train.csv", "w") as f:
        f.write("filepath,title\n" + "".join(f'{r["filepath"]},"{r["title"]}"\n' for r in table))
    # 100 rows / batch 5 = 20 batches: one epoch reads every row once
    d = run_recipe(
        corpus100, tmp_path / "run", {"train": str(tmp_path / "train.csv"), "batch_size": 5, "num_workers": 2}, steps=20
    )
    res = train(d, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == {"corrupt_image": 2, "empty_caption": 3, "missing_image": 1}


KILL = """
import os, signal
from mmcl.train import trainer as T
_step = T.Trainer._train_step
def step(self, batches):
    if self.step == {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, batches)
T.Trainer._train_step = step
"""


@pytest.mark.parametrize("kind", ["csv", "wds"])
def test_killed_run_resumes_with_every_sample_of_the_epoch_exactly_once(kind, tiny_corpus, tmp_path):
    if kind == "wds":
        shards = img2dataset_shards(tiny_corpus, tmp_path / "shards", 4)
        data = {"train": str(tmp_path / "shards"), "num_workers": 2}
        everything = {record_uid(str(s), f"{s.stem}{j:04d}") for s in shards for j in range(12)}
    else:
        data = {"num_workers": 2}
        everything = set(range(48))
    out = tmp_path / "run"
    # 48 samples / batch 8 = 6 steps per epoch; killed (SIGKILL) during step 5, checkpoint at step 4
    d = run_recipe(tiny_corpus, out, data, steps=6, checkpoint_every=1)
    res = train(d, tmp_path, KILL.format(at=4))
    assert res.returncode == -9
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000004"
    d["train"]["resume"] = "latest"
    d["data"]["num_workers"] = 1  # a different reader layout must not matter
    res = train(d, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout
    steps = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    ids = [i for s in steps for i in s["index"]]
    assert len(ids) == 48 and set(ids) == everything
