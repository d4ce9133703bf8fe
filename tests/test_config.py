"""Recipes: typed loading, _base_ inheritance, dotted overrides, and clear errors for bad input."""

import copy

import pytest
import yaml

from mmcl import ConfigError, load_recipe

from .conftest import tiny_recipe_dict


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_typed_sections(tiny_corpus, tmp_path):
    r = load_recipe(write(tmp_path, tiny_recipe_dict(tiny_corpus, tmp_path / "run")))
    assert r.data.batch_size == 8 and isinstance(r.train.lr, float)
    assert r.model.vision.kwargs["embed_dim"] == 32
    assert r.eval.datasets[0].tasks == ["zeroshot", "retrieval"]


def test_base_inheritance_and_overrides(tiny_corpus, tmp_path):
    write(tmp_path, tiny_recipe_dict(tiny_corpus, tmp_path / "run"), "base.yaml")
    child = write(tmp_path, {"_base_": "base.yaml", "name": "child", "train": {"steps": 9}}, "child.yaml")
    r = load_recipe(child, ["train.lr=5e-4", "train.steps=200", "data.batch_size=4", "train.grad_clip=null"])
    assert r.name == "child" and r.train.steps == 200 and r.train.lr == 5e-4
    assert r.data.batch_size == 4 and r.train.grad_clip is None
    assert r.train.warmup_steps == 1  # inherited from the base


BAD = [
    # (edit of the recipe dict, fragment the message must contain)
    (lambda d: d["train"].update(stpes=3), "unknown key 'train.stpes' (did you mean 'steps'?)"),
    (lambda d: d.update(trian={}), "unknown key 'trian'"),
    (lambda d: d["train"].update(steps="many"), "train.steps: expected an integer, got 'many'"),
    (lambda d: d["train"].update(lr="fast"), "train.lr: expected a number"),
    (lambda d: d["train"].update(precision="fp8"), "valid choices: fp32, bf16, fp16"),
    (
        lambda d: d["loss"].update(name="clip"),
        "unknown loss 'clip'; valid choices: cluster_infonce, dcl, dclw, densecl, hcl, infonce, moco, ntxent, siglip, "
        "supcon, triplet",
    ),
    (lambda d: d["data"].update(train="nowhere/train.csv"), "data.train: not found: nowhere/train.csv"),
    (lambda d: d["model"]["vision"].update(name="vit_tinyy_patch16_224"), "is not a timm model; close matches"),
    (lambda d: d["model"]["text"].update(path="/no/such/dir"), "exactly one of 'path'"),
    (lambda d: d["model"]["text"].update(tokenizer="/no/such/tok"), "model.text.tokenizer: directory not found"),
    (lambda d: d["model"]["text"]["config"].update(model_type="bertt"), "not a transformers model type"),
    (lambda d: d["model"]["text"].update(pooler="max"), "valid choices: mean, cls"),
    (lambda d: d["data"].update(batch_size=1), "data.batch_size must be >= 2"),
    (lambda d: d["loss"].update(kwargs={"temperature": 0.1}), "not valid for 'infonce': InfoNCELoss.__init__() got an"),
    (lambda d: d["loss"].update(kwargs={"temperature": 0.1}), "valid keys: label_smoothing, chunk_size. loss.kwargs"),
    (lambda d: d["loss"].update(kwargs={"label_smoothing": 2}), "label_smoothing must be in [0, 1)"),
    (lambda d: d["eval"]["datasets"][0].update(tasks=["linear"]), "valid choices: zeroshot, retrieval"),
    (
        lambda d: d["eval"]["datasets"][0].update(classnames="cifar11"),
        "classnames 'cifar11': not a file, nor a shipped benchmark",
    ),
    (lambda d: d["train"].update(stop_at_step=99), "train.stop_at_step must be in [1, train.steps=4]"),
    (lambda d: d.update(data=[1, 2]), "data: expected a mapping with keys"),
    (
        lambda d: d["data"].update(synthetic={"max_objects": 12}),
        "data.synthetic.max_objects must be an integer in 2..9 (one object per cell of the 3x3 grid), got 12",
    ),
    (lambda d: d["data"].update(synthetic={"max_objects": True}), "data.synthetic.max_objects: expected an integer"),
    (
        lambda d: d["data"].update(synthetic={"n_tran": 5}),
        "unknown key 'data.synthetic.n_tran' (did you mean 'n_train'",
    ),
]


@pytest.mark.parametrize("edit,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_recipes_fail_with_clear_messages(tiny_corpus, tmp_path, edit, message):
    data = copy.deepcopy(tiny_recipe_dict(tiny_corpus, tmp_path / "run"))
    edit(data)
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, data))
    assert message in str(info.value)


def test_bad_files_and_overrides(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "broken.yaml")
    good = write(tmp_path, tiny_recipe_dict(tiny_corpus, tmp_path / "run"))
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_recipe(good, ["train.lr"])
    write(tmp_path, {"_base_": "b.yaml"}, "a.yaml")
    write(tmp_path, {"_base_": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_replace_swaps_a_mapping_instead_of_merging(tiny_corpus, tmp_path):
    write(tmp_path, tiny_recipe_dict(tiny_corpus, tmp_path / "run"), "base.yaml")
    child = write(
        tmp_path,
        {
            "_base_": "base.yaml",
            "model": {"vision": {"name": "test_convnext", "kwargs": {"_replace_": True, "drop_path_rate": 0.1}}},
        },
        "child.yaml",
    )
    r = load_recipe(child)
    assert r.model.vision.kwargs == {"drop_path_rate": 0.1}  # the base's ViT kwargs are gone
    assert r.model.text.max_length == 24  # everything else still inherited


def test_loss_must_fit_image_text_training(tiny_corpus, tmp_path):
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    data["loss"] = {"name": "moco"}
    with pytest.raises(
        ConfigError,
        match="'moco' is a two-view loss .* one of: cluster_infonce, dcl, dclw, hcl, infonce, ntxent, siglip, triplet",
    ):
        load_recipe(write(tmp_path, data))
    data["loss"] = {"name": "hcl", "kwargs": {"temperature": 0.1}}  # image and caption as the two views
    assert load_recipe(write(tmp_path, data)).loss.name == "hcl"
    data["loss"] = {"name": "siglip"}
    with pytest.raises(ConfigError, match="needs a learnable logit bias: set model.logit_bias_init"):
        load_recipe(write(tmp_path, data))
    data["model"]["logit_bias_init"] = -10.0
    assert load_recipe(write(tmp_path, data)).loss.name == "siglip"


def test_environment_variables_in_recipes(tiny_corpus, tmp_path, monkeypatch):
    """``${VAR}`` and ``${VAR:-default}`` name data outside the repository; an unset one is one clear error."""
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    data["data"]["train"] = "${MMCL_TEST_DATA}/train.csv"
    data["train"]["output_dir"] = "${MMCL_TEST_RUNS:-" + str(tmp_path / "runs") + "}/{name}"
    path = write(tmp_path, data)
    monkeypatch.setenv("MMCL_TEST_DATA", str(tiny_corpus))
    r = load_recipe(path)
    assert r.data.train == str(tiny_corpus / "train.csv") and r.run_dir == tmp_path / "runs" / "tiny"
    monkeypatch.delenv("MMCL_TEST_DATA")
    with pytest.raises(ConfigError, match=r"data.train: environment variable MMCL_TEST_DATA is not set"):
        load_recipe(path)
    monkeypatch.setenv("MMCL_TEST_DATA", str(tiny_corpus))
    assert load_recipe(path, ["name=$notavar"]).name == "$notavar"  # a lone $ is left alone


def test_symmetric_two_view_losses_train_image_text_and_the_others_are_refused(tiny_corpus, tmp_path):
    """docs/losses.md: ntxent, dcl, dclw and hcl take an image and its caption as two views; supcon,
    moco and densecl are refused for image-text with the valid choices (the old README said every
    two-view loss was refused)."""
    for name in ("ntxent", "dcl", "dclw", "hcl"):
        data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
        data["loss"] = {"name": name}
        assert load_recipe(write(tmp_path, data)).loss.name == name
    for name in ("supcon", "moco", "densecl"):
        data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
        data["loss"] = {"name": name}
        with pytest.raises(ConfigError, match=f"'{name}' is a two-view loss .* image-text training needs one of: .*"):
            load_recipe(write(tmp_path, data))


def test_a_corpus_the_run_generates_need_not_exist_when_the_recipe_is_checked(tmp_path, monkeypatch):
    """The quickstart generates its corpus at start-up: its recipe, which names the corpus's files for
    training and evaluation (class names and templates included), checks before they exist."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # the recipe's data/shapes is relative: nothing there yet
    root = Path(__file__).resolve().parents[1]
    r = load_recipe(root / "recipes" / "quickstart.yaml")
    assert not (tmp_path / "data").exists() and r.eval.datasets[0].classnames == "data/shapes/classnames.txt"
