"""Reading run folders written by ``mmcl train``: the resolved recipe, the tokenizer, and the
step checkpoints, whose layout is defined here (writing them is :mod:`mmcl.train.checkpoint`'s job).

    RUN_DIR/recipe.yaml        the resolved recipe (after _base_ and overrides)
    RUN_DIR/text_config.json   the transformers config of the text tower
    RUN_DIR/tokenizer/         the tokenizer, saved with the run
    RUN_DIR/checkpoints/step-0000100/
        model.safetensors      model weights
        ema.safetensors        the EMA of the weights (with train.ema_decay)
        state.pt               optimizer, scheduler, RNG states, step and data position
                               (plain tensors and containers only: loaded with ``weights_only=True``)
    RUN_DIR/checkpoints/latest a text file naming the newest complete checkpoint

Loading a model from a run needs only its recipe's model section: a run trained with a plugin loss
loads without the plugin.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoTokenizer

from ..errors import ConfigError
from ..recipe import ModelConfig, Recipe, recipe_from_dict
from ..recipe.load import build_section
from ..weights import load_safetensors_into, load_torch_file
from .backends import BACKENDS, backend_name, get_backend
from .factory import create_model

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step-"


def is_run_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "recipe.yaml").is_file()


def _latest_name(root: Path) -> str | None:
    try:
        return (root / "latest").read_text().strip()
    except OSError:
        return None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "model.safetensors").is_file() and (p / "state.pt").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "model.safetensors").is_file() and (candidate / "state.pt").is_file():
            return candidate
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_weights(path: str | os.PathLike, model: torch.nn.Module, name: str = "model.safetensors") -> None:
    """Load ``name`` from a checkpoint folder into ``model`` (strict; a bad file is refused in one line)."""
    load_safetensors_into(model, Path(path) / name, strict=True)


def load_state(path: str | os.PathLike) -> dict:
    """The checkpoint's ``state.pt``, read with ``weights_only=True`` (a pickle with code is refused)."""
    return load_torch_file(Path(path) / "state.pt", "checkpoint state")


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
    backend = BACKENDS.get(backend_name(build_section(ModelConfig, data["model"], "model")))()
    if backend.wraps_library:  # its config, tokenizer and preprocessing were saved in the run folder
        data["model"] = backend.folder_config(data["model"], Path(run_dir))
        return recipe_from_dict(data, model_only=True)
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

    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise ConfigError(f"no checkpoint found in {run_dir / 'checkpoints'}")
    image_image = recipe.model.kind == "image_image"
    wraps_library = get_backend(recipe.model).wraps_library
    text_config = None
    if not image_image and not wraps_library:
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
    if wraps_library:
        return model, get_backend(recipe.model).tokenizer(recipe.model, model).tokenizer, recipe, ckpt
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer", local_files_only=True, trust_remote_code=False)
    return model, tokenizer, recipe, ckpt
