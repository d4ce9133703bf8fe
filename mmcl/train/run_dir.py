"""What a run folder holds besides checkpoints, and how to rebuild a model from it.

RUN_DIR/recipe.yaml        the resolved recipe (after _base_ and overrides)
RUN_DIR/text_config.json   the transformers config of the text tower
RUN_DIR/tokenizer/         the tokenizer, saved with the run
RUN_DIR/checkpoints/       see :mod:`mmcl.train.checkpoint`
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from transformers import AutoConfig, AutoTokenizer

from ..config import ConfigError, Recipe, recipe_from_dict, recipe_to_dict
from .checkpoint import latest_checkpoint, load_weights, output_errors


def save_run_metadata(run_dir: Path, recipe: Recipe, text_config, tokenizer) -> None:
    """Write the resolved recipe, and the text tower's config and tokenizer, into ``run_dir``.

    Raises:
        OutputError: the folder cannot be written (a full disk, a read-only file system).
    """
    with output_errors(run_dir, "the recipe and tokenizer of the run"):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        if text_config is not None:  # image-image models have no text tower
            text_config.to_json_file(run_dir / "text_config.json")
            tokenizer.save_pretrained(run_dir / "tokenizer")


def load_run_recipe(run_dir: str | os.PathLike) -> Recipe:
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not an mmcl run folder (no recipe.yaml)")
    data = yaml.safe_load(path.read_text())
    # Weights come from the checkpoint and the tokenizer from the run folder, so the run does not
    # depend on the original text-tower path or vision weights files still being there.
    data["model"]["vision"]["weights"] = None
    if data["model"].get("vision2"):
        data["model"]["vision2"]["weights"] = None
    data["model"]["init_from"] = None
    data["train"]["resume"] = None
    if data["model"].get("kind") == "image_image":  # no text tower
        return recipe_from_dict(data, model_only=True)
    data["model"]["text"]["tokenizer"] = str(Path(run_dir) / "tokenizer")
    data["model"]["text"]["config"] = {"model_type": "bert"}  # placeholder; replaced by text_config.json
    data["model"]["text"]["path"] = None
    # only the model is checked: loading needs no loss (a plugin loss need not be imported), data or optimiser
    return recipe_from_dict(data, model_only=True)


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None, ema: bool | None = None):
    """Rebuild ``(model, tokenizer, recipe, checkpoint_path)`` from a run folder, offline
    (``tokenizer`` is None for an image-image model).

    Args:
        run_dir: a folder written by ``mmcl train``.
        checkpoint: a checkpoint folder; the run's latest when None.
        ema: load the checkpoint's EMA weights (``ema.safetensors``, written with
            ``train.ema_decay``). None: the EMA when there is one, which is what the run's own
            evaluation used; False: the trained weights.
    """
    from ..models import create_model

    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise ConfigError(f"no checkpoint found in {run_dir / 'checkpoints'}")
    image_image = recipe.model.kind == "image_image"
    text_config = None
    if not image_image:
        text_config = AutoConfig.from_pretrained(run_dir / "text_config.json", local_files_only=True)
    model = create_model(recipe.model, text_config=text_config, load_weights=False)
    has_ema = (ckpt / "ema.safetensors").is_file()
    if ema and not has_ema:
        raise ConfigError(f"{ckpt} has no ema.safetensors (the run did not set train.ema_decay)")
    if has_ema and ema is not False:
        load_weights(ckpt, model, "ema.safetensors")
    else:
        load_weights(ckpt, model)
    if image_image:
        return model, None, recipe, ckpt
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer", local_files_only=True, trust_remote_code=False)
    return model, tokenizer, recipe, ckpt
