"""Image-image training end to end (model.kind: image_image): SimCLR/MoCo/SupCon/DenseCL on two
views, paired modalities with two towers, exact resume with the MoCo and DenseCL queues and key
encoder, the dense probe and fine-tuning evaluations, SupCon labels from an image folder, config
errors, and 2-process runs equal to one process (ntxent, moco, densecl with either matching)."""

import csv
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmcl
from mmcl.errors import ConfigError
from mmcl.eval.adapters import MmclAdapter
from mmcl.recipe import recipe_from_dict
from mmcl.train import latest_checkpoint
from mmcl.train.recipes import check_recipe

from ..conftest import TINY_VIT, run_one_and_two_processes, ssl_recipe_dict


def losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]


def moco(data, queue=16, momentum=0.9):
    data["loss"] = {"name": "moco", "kwargs": {"queue_size": queue}}
    data["model"].update(head="mocov2", momentum=momentum)
    return data


def densecl(data, queue=32, momentum=0.9, warmup=2):
    data["loss"] = {"name": "densecl", "kwargs": {"queue_size": queue, "warmup_steps": warmup}}
    data["model"].update(head="mlp", momentum=momentum, dense=True)
    return data


def test_simclr_trains_and_probes_end_to_end(ssl_corpus, tmp_path):
    trainer = mmcl.Trainer(recipe_from_dict(ssl_recipe_dict(ssl_corpus, tmp_path / "run")))
    batch = next(iter(trainer.loader))
    assert batch["images"].shape == batch["images2"].shape == (8, 3, 32, 32)
    assert not torch.equal(batch["images"], batch["images2"])  # two different views
    assert "input_ids" not in batch
    records = trainer.fit()
    assert {(r["task"]) for r in records} == {"knn", "linear_probe"}
    for r in records:
        assert 0 <= r["metrics"]["acc1"] <= 1 and r["metrics"]["num_test" if r["task"] == "linear_probe" else "k"]
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "run"))))
    assert not (tmp_path / "run" / "tokenizer").exists()
    # the run folder reloads offline; the adapter reads backbone features for probes
    adapter = MmclAdapter.from_run(tmp_path / "run")
    x = torch.randn(2, 3, 32, 32)
    assert adapter.encode_image(x).shape == (2, adapter.model.vision.num_features)
    assert adapter.encode_paired(x).shape == (2, 16)
    with pytest.raises(ConfigError, match="no text tower"):
        adapter.encode_text(["a red circle"])
    # a pretrained folder (safetensors + config, no tokenizer) gives the same features back
    folder = adapter.model.save_pretrained(tmp_path / "pretrained")
    assert not (folder / "tokenizer.json").exists()
    model, tokenize, preprocess = mmcl.load_pretrained(folder)
    assert isinstance(model, mmcl.ImageEncoder) and tokenize is None
    torch.testing.assert_close(model.features(x), adapter.model.cpu().features(x))


def test_moco_stop_and_resume_equals_a_straight_run(ssl_corpus, tmp_path):
    """The queue (loss state) and the key encoder (model weights) come back exactly."""
    runs = {}
    for name, legs in {"straight": [{}], "resumed": [{"stop_at_step": 3}, {"resume": "latest"}]}.items():
        for leg in legs:
            data = moco(ssl_recipe_dict(ssl_corpus, tmp_path / name, steps=6, checkpoint_every=100, **leg))
            data["eval"]["datasets"] = []
            mmcl.Trainer(recipe_from_dict(data)).fit()
        runs[name] = latest_checkpoint(tmp_path / name)
    a, b = load_file(str(runs["straight"] / "model.safetensors")), load_file(str(runs["resumed"] / "model.safetensors"))
    assert any(k.startswith("key_encoder.") for k in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    qa = torch.load(runs["straight"] / "state.pt", weights_only=True)["loss"]
    qb = torch.load(runs["resumed"] / "state.pt", weights_only=True)["loss"]
    assert int(qa["queue_len"]) == 16  # 6 steps x 8 keys through a 16-key ring
    torch.testing.assert_close(qb["queue"], qa["queue"], rtol=1e-5, atol=1e-6)
    assert int(qb["queue_ptr"]) == int(qa["queue_ptr"])
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "resumed")), torch.tensor(losses(tmp_path / "straight")))


def test_densecl_resumes_exactly_and_probes_per_pixel_and_by_fine_tuning(ssl_corpus, tmp_path):
    """Both queues, the warm-up count and the dense head's key copy come back exactly on resume;
    the dense probe and the fine-tuning comparison run on the trained tower."""
    runs = {}
    for name, legs in {"straight": [{}], "resumed": [{"stop_at_step": 3}, {"resume": "latest"}]}.items():
        for leg in legs:
            data = densecl(ssl_recipe_dict(ssl_corpus, tmp_path / name, steps=6, checkpoint_every=100, **leg))
            data["eval"]["datasets"][0].update(
                tasks=["dense_probe", "finetune"],
                mask_key="mask",
                dense_probe_epochs=2,
                finetune_fractions=[0.25, 1.0],
                finetune_epochs=2,
            )
            probe_cfg = dict(data["eval"]["datasets"][0])
            if name == "resumed":
                data["eval"]["datasets"] = []
                mmcl.Trainer(recipe_from_dict(data)).fit()
            else:
                records = mmcl.Trainer(recipe_from_dict(data)).fit()
        runs[name] = latest_checkpoint(tmp_path / name)
    a, b = load_file(str(runs["straight"] / "model.safetensors")), load_file(str(runs["resumed"] / "model.safetensors"))
    assert any(k.startswith("key_encoder.dense.") for k in a) and any(k.startswith("dense_proj.") for k in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    sa = torch.load(runs["straight"] / "state.pt", weights_only=True)["loss"]
    sb = torch.load(runs["resumed"] / "state.pt", weights_only=True)["loss"]
    assert int(sa["calls"]) == int(sb["calls"]) == 6
    for queue in ("global_term.queue", "dense_keys.queue"):
        torch.testing.assert_close(sb[queue], sa[queue], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "resumed")), torch.tensor(losses(tmp_path / "straight")))
    metrics = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss/w"] for m in metrics if "loss/w" in m] == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5]  # 2 warm-up steps

    dense, finetune = (r["metrics"] for r in records)
    assert dense["feature_grid"] == [4, 4] and dense["num_test"] == 16 and 0 <= dense["mean_iou"] <= 1
    assert dense["num_classes_present"] >= 2  # background + the test objects' classes
    for frac in ("25%", "100%"):
        for arm in ("pretrained", "scratch"):
            assert 0 <= finetune[f"{frac}/{arm}_acc1"] <= 1
        gain = finetune[f"{frac}/pretrained_acc1"] - finetune[f"{frac}/scratch_acc1"]
        assert finetune[f"{frac}/gain_acc1"] == pytest.approx(gain)
    assert finetune["100%/num_train"] == 32 and finetune["num_test"] == 16
    # a probe at another input side: the ViT (fixed position embeddings) is refused by name; a
    # convolutional tower at twice the side reads a map twice as fine
    from dataclasses import replace

    from mmcl.data import image_transforms
    from mmcl.eval.runner import segmentation_splits
    from mmcl.recipe import EvalDatasetConfig

    ds = EvalDatasetConfig(**{**probe_cfg, "tasks": ["dense_probe"], "dense_probe_size": 64})
    with pytest.raises(ConfigError, match="dense_probe_size=64.*valid: null"):
        segmentation_splits(MmclAdapter.from_run(tmp_path / "straight"), ds, 16)
    cnn = ssl_recipe_dict(ssl_corpus, tmp_path / "cnn")
    cnn["model"]["vision"] = {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}}
    cnn["model"]["vision"]["image_size"] = 32
    recipe = recipe_from_dict(cnn)
    model = mmcl.create_model(recipe.model)
    eval_tf = image_transforms(model.vision.data_config(), recipe.data.augment)[1]
    adapter = MmclAdapter(model, None, eval_tf, torch.device("cpu"), name="cnn")
    grids = [segmentation_splits(adapter, replace(ds, dense_probe_size=side), 16)["test"] for side in (None, 64)]
    assert tuple(grids[0][0].shape[-2:]) == (1, 1) and tuple(grids[1][0].shape[-2:]) == (2, 2)
    assert tuple(grids[0][1].shape[-2:]) == (32, 32) and tuple(grids[1][1].shape[-2:]) == (64, 64)


def test_moco_accumulation_follows_the_large_batch_curve(ssl_corpus, tmp_path):
    """GradCache for image-image: 2 micro-batches of 8 give the losses of one batch of 16, with the
    queue and the key encoder updated once per step (the tiny ViT and MLP heads have no BatchNorm)."""
    curves = {}
    for name, batch, accumulation in (("big", 16, 1), ("acc", 8, 2), ("small", 8, 1)):
        data = moco(ssl_recipe_dict(ssl_corpus, tmp_path / name, steps=4, checkpoint_every=100), queue=32)
        data["train"]["accumulation_steps"] = accumulation
        data["data"]["batch_size"] = batch
        data["eval"]["datasets"] = []
        mmcl.Trainer(recipe_from_dict(data)).fit()
        curves[name] = torch.tensor(losses(tmp_path / name))
    assert len(curves["big"]) == len(curves["acc"]) == 4
    torch.testing.assert_close(curves["acc"], curves["big"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(curves["small"], curves["big"], rtol=1e-2)  # the test can fail


def test_supcon_reads_the_labels_of_an_image_folder(ssl_corpus, tmp_path):
    with open(ssl_corpus / "train.csv") as f:
        rows = list(csv.DictReader(f))
    root = tmp_path / "folder"
    classes = {}
    for i, row in enumerate(rows):
        name = f"shape_{int(row['label']) % 4}"  # 4 classes: every batch of 8 repeats some
        (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(ssl_corpus / row["filepath"], root / name / f"{i:03d}.png")
        classes[name] = int(row["label"]) % 4
    data = ssl_recipe_dict(ssl_corpus, tmp_path / "run", loss="supcon", steps=2)
    data["data"]["train"] = str(root)
    data["eval"]["datasets"] = []
    trainer = mmcl.Trainer(recipe_from_dict(data))
    names = sorted(classes)
    dataset = trainer.dataset
    batch = next(iter(trainer.loader))
    for index, label in zip(batch["index"].tolist(), batch["label"].tolist()):
        assert names[label] == dataset.record(index)[0].parent.name  # the folder is the class
    assert len(set(batch["label"].tolist())) < 8  # some classes repeat: SupCon has positives beyond the views
    trainer.fit()
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "run"))))


def test_supcon_without_labels_is_a_clear_error(ssl_corpus, tmp_path):
    data = ssl_recipe_dict(ssl_corpus, tmp_path / "run", loss="supcon", steps=1)
    with pytest.raises(mmcl.TrainingError, match="needs class labels.*data.label_key"):
        mmcl.Trainer(recipe_from_dict(data)).fit()


def test_paired_modalities_with_two_towers_train_and_retrieve(ssl_corpus, tmp_path):
    data = ssl_recipe_dict(ssl_corpus, tmp_path / "run", loss="infonce")
    data["data"].update(image2_key="sketch", augment={"enabled": False})
    data["model"].update(vision2=TINY_VIT, head="linear")
    data["eval"]["datasets"] = [
        {"name": "pairs", "path": str(ssl_corpus / "test.csv"), "tasks": ["image_retrieval"], "image2_key": "sketch"}
    ]
    trainer = mmcl.Trainer(recipe_from_dict(data))
    batch = next(iter(trainer.loader))
    assert batch["images2"].shape == batch["images"].shape
    assert batch["images2"].mean() > batch["images"].mean()  # sketches are mostly white
    (record,) = trainer.fit()
    m = record["metrics"]
    assert record["task"] == "image_retrieval" and m["num_pairs"] == 16 and m["chance_recall_at_1"] == 1 / 16
    for key in ("forward_recall@1", "backward_recall@1", "forward_recall@10"):
        assert 0 <= m[key] <= 1
    assert m["forward_recall@10"] >= m["forward_recall@1"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["loss"].update(name="moco"), "moco .* together with model.momentum"),
        (lambda d: d["model"].update(momentum=0.99), "only loss.name: densecl, moco uses"),
        (lambda d: d["eval"]["datasets"][0].update(tasks=["zeroshot"]), "need a text tower.*knn, linear_probe"),
        (lambda d: d["eval"]["datasets"][0].update(tasks=["image_retrieval"]), "needs image2_key"),
        (lambda d: d["data"].update(augment={"enabled": False}), "two augmented views.*data.image2_key"),
        (lambda d: d["data"]["augment"].update(grayscale=1.5), "grayscale is a probability"),
        (lambda d: d["model"].update(kind="image_text", momentum=0.9), "needs model.kind: image_image"),
        (lambda d: d["model"].update(head="byol"), "valid choices: linear, mlp, simclr, mocov2"),
        (lambda d: (d["loss"].update(name="densecl"), d["model"].update(momentum=0.9)), "set model.dense: true"),
        (lambda d: moco(d)["model"].update(dense=True), "only loss.name: densecl trains"),
        (lambda d: d["model"].update(kind="image_text", dense=True), "model.dense .*needs model.kind: image_image"),
        (lambda d: d["eval"]["datasets"][0].update(tasks=["dense_probe"]), "needs mask_key"),
        (lambda d: d["eval"]["datasets"][0].update(finetune_fractions=[0.0]), r"fractions in \(0, 1\]"),
        (
            lambda d: (
                densecl(d)["loss"]["kwargs"].update(match="geometry") or d["data"]["augment"].update(preset="timm")
            ),
            "match: geometry .*preset: simclr.*valid matches: features, geometry",
        ),
    ],
)
def test_config_errors_name_the_fix(ssl_corpus, tmp_path, change, message):
    data = ssl_recipe_dict(ssl_corpus, tmp_path / "run")
    change(data)
    with pytest.raises(ConfigError, match=message):
        check_recipe(recipe_from_dict(data))


@pytest.mark.parametrize("loss", ["ntxent", "moco", "densecl", "densecl-geometry"])
def test_two_processes_match_one_process_with_the_whole_batch(ssl_corpus, tmp_path, loss):
    """Per-item seeded views, a LayerNorm tower and a BN-free head: 2 x 4 must equal 1 x 8."""
    for name, batch in (("one", 8), ("two", 4)):
        data = ssl_recipe_dict(ssl_corpus, tmp_path / name, loss=loss.split("-")[0], steps=6, checkpoint_every=100)
        data["data"]["batch_size"] = batch
        data["eval"]["datasets"] = []
        if loss == "moco":
            moco(data, queue=32)
            data["model"]["head"] = "mlp"
        if loss.startswith("densecl"):
            densecl(data, warmup=2)  # 4 steps with the dense term on, the queues used from step 2
        if loss == "densecl-geometry":  # cells paired by crop boxes; the mean over the valid cells of both ranks
            data["loss"]["kwargs"].update(match="geometry", cell_negatives=0.5)  # with in-image negatives
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    run_one_and_two_processes(tmp_path)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 6
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
    wa = load_file(str(latest_checkpoint(tmp_path / "one") / "model.safetensors"))
    wb = load_file(str(latest_checkpoint(tmp_path / "two") / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5, msg=name)
