"""CLIP_benchmark's own code, run on an mmcl model exported to open_clip and on a generated
WebDataset in CLIP_benchmark's `wds` layout, gives the numbers of mmcl's evaluator on the mmcl model."""

from __future__ import annotations

import builtins
import csv
import json

import numpy as np
import pytest
import torch

from mmcl.cli import main
from mmcl.data.synthetic import make_corpus
from mmcl.eval.datasets import open_dataset
from mmcl.recipe import SyntheticConfig

from ..eval.clip_benchmark_wds import write_clip_benchmark_wds
from .conftest import tiny_model

REPEATED = ["a red shape", "a blue circle above a square", "two shapes", "a small star"]


def _model(source, root):
    """The model under test: mmcl's own towers, or a user's open_clip model on the open_clip backend."""
    if source == "mmcl":
        return tiny_model("test_vit", seed=3)
    import mmcl
    from mmcl.recipe import ModelConfig
    from mmcl.recipe.load import build_section

    from ..models.library_models import write_open_clip

    config, weights = write_open_clip(root / "files", "tiny-oc-clip", seed=3)
    cfg = {"backend": "open_clip", "name": str(config), "pretrained": str(weights)}
    return mmcl.create_model(build_section(ModelConfig, cfg, "model"))


@pytest.fixture(scope="module", params=["mmcl", "open_clip"])
def setup(request, tmp_path_factory):
    from mmcl.interop import export_open_clip

    root = tmp_path_factory.mktemp("cb")
    corpus = make_corpus(
        SyntheticConfig(root=str(root / "shapes"), n_train=8, n_test=96, n_novel=8, image_size=32), progress=False
    )
    data = open_dataset(corpus / "test.csv")
    write_clip_benchmark_wds(data, root / "wds_cls", "classification", shard_size=32)
    write_clip_benchmark_wds(data, root / "wds_ret", "retrieval", shard_size=32)
    # the same images with 4 distinct captions among 96: recall@k hangs on how ties are broken
    lines = (corpus / "test.csv").read_text().splitlines()
    with open(root / "repeated.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        for i, row in enumerate(csv.DictReader(lines)):
            w.writerow([str(corpus / row["filepath"]), REPEATED[i % len(REPEATED)]])
    write_clip_benchmark_wds(open_dataset(root / "repeated.csv"), root / "wds_rep", "retrieval", shard_size=32)
    model = _model(request.param, root)
    model.save_pretrained(root / "mmcl-model")
    export_open_clip(model, root / "open-clip-model")
    return root


def _mmcl(root, task, dataset):
    out = root / f"{task}.json"
    args = ["eval", task, "--model", str(root / "mmcl-model"), "--dataset", str(root / dataset), "--device", "cpu"]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())["metrics"]


def _clip_benchmark(root, dataset, task, batch_size=32):
    import open_clip
    from clip_benchmark.datasets.builder import build_dataset

    name = f"local-dir:{root / 'open-clip-model'}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    ds = build_dataset("wds/shapes", root=str(root / dataset), transform=preprocess, split="test", task=task)
    if task == "zeroshot_retrieval":
        collate = lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])  # noqa: E731
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate)
    else:
        loader = torch.utils.data.DataLoader(ds.batched(batch_size), batch_size=None)
    return model, ds, loader, open_clip.get_tokenizer(name)


def test_clip_benchmark_zero_shot_on_the_export_equals_mmcl(setup, monkeypatch):
    from clip_benchmark.metrics import zeroshot_classification

    monkeypatch.setattr(  # clip-benchmark 1.6.2's accuracy() vs NumPy >= 2.4 (see tests/eval/test_metrics.py)
        zeroshot_classification, "float", lambda v: builtins.float(np.asarray(v).reshape(())), raising=False
    )
    model, ds, loader, tok = _clip_benchmark(setup, "wds_cls", "zeroshot_classification")
    theirs = zeroshot_classification.evaluate(model, loader, tok, ds.classes, ds.templates, "cpu", amp=False)
    ours = _mmcl(setup, "zeroshot", "wds_cls")
    assert ours["num_items"] > 20
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key


def test_clip_benchmark_retrieval_on_the_export_equals_mmcl(setup):
    from clip_benchmark.metrics import zeroshot_retrieval

    model, ds, loader, tok = _clip_benchmark(setup, "wds_ret", "zeroshot_retrieval")
    theirs = zeroshot_retrieval.evaluate(model, loader, tok, "cpu", amp=False, recall_k_list=[1, 5, 10])
    ours = _mmcl(setup, "retrieval", "wds_ret")
    assert ours["num_images"] == 96
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_clip_benchmark_retrieval_with_repeated_captions_equals_mmcl(setup):
    """Tied scores: which of the tied captions torch.topk keeps decides recall, and mmcl agrees."""
    from clip_benchmark.metrics import zeroshot_retrieval

    from mmcl.eval.adapters import load_adapter
    from mmcl.eval.retrieval import evaluate_retrieval

    model, ds, loader, tok = _clip_benchmark(setup, "wds_rep", "zeroshot_retrieval")
    theirs = zeroshot_retrieval.evaluate(model, loader, tok, "cpu", amp=False, recall_k_list=[1, 5, 10])
    ours = _mmcl(setup, "retrieval", "wds_rep")
    assert ours["num_images"] == 96 and ours["num_texts"] == 96
    for key, value in theirs.items():
        assert ours[key] == value, key
    # ties in the query's favour (mmcl's figure before): an image whose caption's group scores highest
    # finds it at any k, so image -> text recall@1 = @5 = @10, far above CLIP_benchmark's
    adapter = load_adapter(str(setup / "mmcl-model"), device="cpu")
    data = open_dataset(str(setup / "wds_rep"), split="test")
    optimistic = evaluate_retrieval(adapter, data, (1, 5, 10), progress=False, optimistic=True)
    assert optimistic["text_retrieval_recall@1"] == ours["text_retrieval_recall@1"]
    assert optimistic["text_retrieval_recall_optimistic@1"] > ours["text_retrieval_recall@1"], optimistic
    assert optimistic["text_retrieval_recall_optimistic@1"] == optimistic["text_retrieval_recall_optimistic@10"]


def test_cli_optimistic_ties_flag(setup):
    """`mmcl eval retrieval --optimistic-ties` adds the named tie-aware figures beside the default ones."""
    out = setup / "optimistic.json"
    args = ["eval", "retrieval", "--model", str(setup / "mmcl-model"), "--dataset", str(setup / "wds_rep")]
    assert main([*args, "--device", "cpu", "--optimistic-ties", "--output", str(out), "--no-progress"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["text_retrieval_recall@1"] == _mmcl(setup, "retrieval", "wds_rep")["text_retrieval_recall@1"]
    assert metrics["text_retrieval_recall_optimistic@1"] > metrics["text_retrieval_recall@1"]
