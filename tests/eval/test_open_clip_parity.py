"""An open_clip model through mmcl's adapter and CLI gives CLIP_benchmark's numbers, when
CLIP_benchmark's own code reads the same generated WebDataset."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch

from mmcl.cli import main
from mmcl.data.synthetic import make_corpus
from mmcl.eval.datasets import open_dataset
from mmcl.recipe import SyntheticConfig

from .clip_benchmark_wds import write_clip_benchmark_wds

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("oc")
    corpus = make_corpus(
        SyntheticConfig(root=str(root / "shapes"), n_train=8, n_test=120, n_novel=8, image_size=32), progress=False
    )
    cfg = root / "tiny-oc.json"
    cfg.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-oc")
    weights = root / "tiny-oc.pt"
    torch.save({"state_dict": model.state_dict()}, weights)
    data = open_dataset(corpus / "test.csv")
    cls_stats = write_clip_benchmark_wds(data, root / "wds_cls", "classification", shard_size=16)
    ret_stats = write_clip_benchmark_wds(data, root / "wds_ret", "retrieval", shard_size=50)
    assert cls_stats["shards"] > 1 and ret_stats == {"written": 120, "skipped": 0, "shards": 3}
    return root, cfg, weights


def _mmcl(task, setup, dataset, *extra):
    root, cfg, weights = setup
    out = root / f"{task}-{dataset}.json"
    args = ["eval", task, "--model", "tiny-oc", "--model-config", str(cfg), "--pretrained", str(weights)]
    args += ["--dataset", str(root / dataset), "--device", "cpu", "--output", str(out), "--no-progress", *extra]
    assert main(args) == 0
    return json.loads(out.read_text())


def _theirs(setup, dataset, task):
    import open_clip
    from clip_benchmark.datasets.builder import build_dataset

    root, cfg, weights = setup
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-oc", pretrained=str(weights))
    model.eval()
    ds = build_dataset("wds/shapes", root=str(root / dataset), transform=preprocess, split="test", task=task)
    collate = None
    if task == "zeroshot_retrieval":
        collate = lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])  # noqa: E731
    loader = torch.utils.data.DataLoader(ds.batched(32), batch_size=None) if collate is None else None
    if collate is not None:
        loader = torch.utils.data.DataLoader(ds, batch_size=32, collate_fn=collate)
    return model, ds, loader, open_clip.get_tokenizer("tiny-oc")


def test_zero_shot_equals_clip_benchmark(setup, monkeypatch):
    from clip_benchmark.metrics import zeroshot_classification

    monkeypatch.setattr(  # clip-benchmark 1.6.2's accuracy() vs NumPy >= 2.4 (see test_metrics)
        zeroshot_classification, "float", lambda v: builtins.float(np.asarray(v).reshape(())), raising=False
    )
    model, ds, loader, tok = _theirs(setup, "wds_cls", "zeroshot_classification")
    theirs = zeroshot_classification.evaluate(model, loader, tok, ds.classes, ds.templates, "cpu", amp=False)
    record = _mmcl("zeroshot", setup, "wds_cls")
    assert record["task"] == "zeroshot_classification" and record["model"] == "tiny-oc"
    assert set(record) >= {"dataset", "model", "pretrained", "task", "metrics"}
    ours = record["metrics"]
    assert ours["num_items"] > 20 and ours["num_classes"] == 32
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


def test_retrieval_equals_clip_benchmark(setup):
    from clip_benchmark.metrics import zeroshot_retrieval

    model, ds, loader, tok = _theirs(setup, "wds_ret", "zeroshot_retrieval")
    theirs = zeroshot_retrieval.evaluate(model, loader, tok, "cpu", amp=False, recall_k_list=[1, 5, 10])
    ours = _mmcl("retrieval", setup, "wds_ret")["metrics"]
    assert ours["num_images"] == 120 and ours["num_texts"] == 120
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < ours["image_retrieval_recall@10"] < 1


def test_csv_and_webdataset_give_the_same_numbers(setup):
    ours_wds = _mmcl("retrieval", setup, "wds_ret")["metrics"]
    ours_csv = _mmcl("retrieval", setup, "shapes/test.csv")["metrics"]
    assert ours_csv == ours_wds
