"""Self-contained model folders: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A pretrained folder holds everything needed to use or fine-tune a model, and nothing that runs code:

    DIR/config.json               {"model_type": "mmcl_dual_encoder", "mmcl_version", "architecture": "DualEncoder",
                                   "model": the recipe's model section, "text_config": the HF text config}
    DIR/model.safetensors         all weights (towers, heads, logit scale and bias)
    DIR/tokenizer.json, ...       the tokenizer (``tokenizer.save_pretrained``)
    DIR/preprocessor_config.json  the eval transform: input_size, mean, std, interpolation, crop_pct
    DIR/README.md                 the model card (:mod:`mmcl.models.card`): licence, datasets, results, usage
    DIR/training_recipe.yaml      the recipe it was trained with, where known

Loading reads weights from safetensors only (never a pickle), builds the text tower from a built-in
transformers config class (never remote code), and touches the network only for an explicit Hub
repo id (``owner/name``) that is not a local folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import Tokenize, image_transforms
from ..data.tokenize import load_tokenizer
from ..errors import ConfigError
from ..recipe import AugmentConfig, ModelConfig
from ..recipe.load import build_section
from ..weights import load_safetensors_into
from .card import remember_origin, write_model_card

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESSOR_NAME = "preprocessor_config.json"
ARCHITECTURE = "DualEncoder"
MODEL_TYPE = "mmcl_dual_encoder"
# files a pretrained folder may hold; a Hub download asks for these only (no pickles)
HUB_PATTERNS = [
    CONFIG_NAME,
    WEIGHTS_NAME,
    PREPROCESSOR_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",  # sentencepiece
    "README.md",
    "training_recipe.yaml",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _backend_for_section(section: dict):
    from .backends import BACKENDS, backend_name  # the backends build the model classes

    return BACKENDS.get(backend_name(build_section(ModelConfig, section, "model")))()


def _backend_of(model):
    from .backends import get_backend  # the backends build the model classes

    return get_backend(model.cfg)


def _save_library_model(model, out: Path, tokenizer=None) -> Path:
    """A pretrained folder of a library's whole CLIP (open_clip, Hugging Face): the weights, the
    model section, and what the backend needs to rebuild it offline."""
    from safetensors.torch import save_model

    backend = _backend_of(model)
    backend.save_metadata(model, tokenizer or backend.tokenizer(model.cfg, model), out)
    save_model(model, str(out / WEIGHTS_NAME))
    section = dataclasses.asdict(model.cfg)
    section.update(init_from=None, pretrained=None)
    config = {"model_type": MODEL_TYPE, "mmcl_version": _version(), "architecture": ARCHITECTURE, "model": section}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=_json_default) + "\n")  # last: complete
    return out


def _load_library_model(path: Path, section: dict):
    from .factory import create_model  # the model classes import this module (PretrainedMixin)

    cfg = build_section(ModelConfig, _backend_for_section(section).folder_config(section, path), "model")
    model = create_model(cfg, load_weights=False)
    load_safetensors_into(model, path / WEIGHTS_NAME, strict=True)
    return model


def _version() -> str:
    from .. import __version__

    return __version__


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def preprocess_config(model) -> dict:
    """The eval transform of ``model`` as plain JSON values (what ``preprocessor_config.json`` holds)."""
    data = model.vision.data_config()
    return {
        "input_size": [int(v) for v in data["input_size"]],
        "interpolation": data.get("interpolation", "bicubic"),
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
        # mmcl's eval transform resizes the shortest side to the input size and centre-crops
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def _model_section(model) -> dict:
    """The model config as saved: weights and the text config live beside it, not behind paths."""
    data = dataclasses.asdict(model.cfg)
    data["vision"]["weights"] = None
    data["init_from"] = None
    if data.get("vision2"):
        data["vision2"]["weights"] = None
    data["text"].update(path=None, config=None, tokenizer=None)
    return data


def _image_only(model) -> bool:
    """An :class:`~mmcl.models.ImageEncoder`: no text tower, no tokenizer."""
    return getattr(model, "kind", "") == "image_image"


def _resolve_tokenizer(model, tokenizer):
    if tokenizer is not None:
        return getattr(tokenizer, "tokenizer", tokenizer)  # a Tokenize wrapper or an HF tokenizer
    text = model.cfg.text
    if text.tokenizer is None and text.path is None:
        raise ConfigError(
            "the model's config names no tokenizer (model.text.tokenizer / model.text.path); "
            "pass tokenizer= to save_pretrained"
        )
    return load_tokenizer(text)


def save_pretrained(
    model,
    save_directory: str | os.PathLike,
    tokenizer=None,
    *,
    model_card: bool = True,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: list[str] | None = None,
    headline=None,
) -> Path:
    """Write ``model`` as a pretrained folder (see the module docstring) and return its path.

    Args:
        model: a :class:`~mmcl.models.DualEncoder`.
        save_directory: created if needed; files of the same names are replaced.
        tokenizer: an HF tokenizer or :class:`~mmcl.data.Tokenize`; default: the one the model's
            config names (``model.text.tokenizer`` or ``model.text.path``).
        model_card: write ``README.md`` (:func:`mmcl.models.card.write_model_card`): a model read
            from a run folder brings the run's recipe and its evaluation of those weights.
        license, datasets, base_model: the card's licence (default ``apache-2.0``), training
            datasets and base models (default: the recipe's).
        headline: ``(task, metrics) -> metric names`` the card lists (default: every score).
    """
    from safetensors.torch import save_model

    out = Path(save_directory)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if _backend_of(model).wraps_library:
        return _save_library_model(model, out, tokenizer)
    if not _image_only(model):
        _resolve_tokenizer(model, tokenizer).save_pretrained(out)
    # a shared/tied tensor is stored once (save_model handles it); the module's own state dict
    # is what gets written, wherever it lives
    save_model(model, str(out / WEIGHTS_NAME))
    (out / PREPROCESSOR_NAME).write_text(json.dumps(preprocess_config(model), indent=2) + "\n")
    if model_card:
        write_model_card(model, out, license=license, datasets=datasets, base_model=base_model, headline=headline)
    config = {
        "model_type": MODEL_TYPE,  # not a transformers type: AutoConfig says so instead of guessing
        "mmcl_version": _version(),
        "architecture": ARCHITECTURE,
        "model": _model_section(model),
        "text_config": None if _image_only(model) else model.text.transformer.config.to_dict(),
    }
    # config.json last: a folder with it is complete
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=_json_default) + "\n")
    return out


def _json_default(value):
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def push_to_hub(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload mmcl model",
    create_repo: bool = True,
    model_card: bool = True,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: list[str] | None = None,
):
    """Save ``model`` as a pretrained folder and upload it to the Hugging Face Hub.

    Uses ``huggingface_hub.HfApi.upload_folder``; ``token`` defaults to the logged-in user's.
    A ``README.md`` model card (loading code naming ``repo_id``; licence, datasets, base models and
    results as for :func:`save_pretrained`) is added unless ``model_card=False``. Returns the
    commit info.
    """
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mmcl-push-") as tmp:
        save_pretrained(model, tmp, tokenizer=tokenizer, model_card=False)
        if model_card:
            write_model_card(model, tmp, repo_id, hub=True, license=license, datasets=datasets, base_model=base_model)
        if create_repo:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            repo_type="model",
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def text_config_from_dict(data: dict):
    """A transformers config from its ``to_dict()``, through the built-in config classes only."""
    from transformers import CONFIG_MAPPING

    data = dict(data)
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"text_config.model_type {model_type!r} is not a built-in transformers model type "
            "(mmcl never runs remote code)"
        )
    return CONFIG_MAPPING[model_type].from_dict(data)


def _is_pretrained_dir(path: Path) -> bool:
    config = path / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("architecture") == ARCHITECTURE
    except (json.JSONDecodeError, AttributeError):
        return False


def _pickles(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)


def _load_pretrained_dir(path: Path):
    from .factory import create_model  # the model classes import this module (PretrainedMixin)

    config = _read_json(path / CONFIG_NAME)
    if isinstance(config.get("model"), dict) and _backend_for_section(config["model"]).wraps_library:
        return _load_library_model(path, config["model"])
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        found = _pickles(path)
        raise ConfigError(
            f"{path} has no {WEIGHTS_NAME}: mmcl loads weights from safetensors only and never unpickles"
            + (f" (found {', '.join(found)})" if found else "")
        )
    image_only = isinstance(config.get("model"), dict) and config["model"].get("kind") == "image_image"
    for key in ("model",) if image_only else ("model", "text_config"):
        if not isinstance(config.get(key), dict):
            raise ConfigError(f"{path / CONFIG_NAME}: missing the {key!r} section")
    section = dict(config["model"])
    if not image_only:
        section["text"] = {**section.get("text", {}), "path": None, "config": dict(config["text_config"])}
        section["text"]["tokenizer"] = str(path)
    section["vision"] = {**section.get("vision", {}), "weights": None}
    cfg = build_section(ModelConfig, section, "model")
    pre = path / PREPROCESSOR_NAME
    if pre.is_file():
        size = _read_json(pre).get("input_size")
        if cfg.vision.image_size is None and size is not None and size[-1] == size[-2]:
            cfg.vision.image_size = int(size[-1])
    text_config = None if image_only else text_config_from_dict(config["text_config"])
    model = create_model(cfg, text_config=text_config, load_weights=False)
    load_safetensors_into(model, weights, strict=True)
    remember_origin(model, path, "pretrained")
    return model


def _load_run(path: Path, checkpoint=None, ema: bool | None = None):
    from .run_folder import load_run  # builds models, like create_model

    # ema=None: the EMA when the checkpoint has one, which is what training evaluated
    model, _, _, ckpt = load_run(path, checkpoint, ema=ema)
    remember_origin(model, path, "run", ckpt, ema=(ckpt / "ema.safetensors").is_file() and ema is not False)
    return model


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, not found, no access: one message for all of them
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"{repo_id}: no such local folder, and the Hugging Face Hub did not give it ({first})"
        ) from None


def from_pretrained(
    path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    ema: bool | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
):
    """A ready model (eval mode) from a folder; see :func:`load_pretrained` for what it reads."""
    model = _load_model(path, checkpoint=checkpoint, ema=ema, revision=revision)
    if device is not None:
        model.to(device)
    return model.eval()


def _load_model(path, checkpoint=None, ema=None, revision=None):
    p = Path(path)
    if not p.exists() and _REPO_ID.match(str(path)):
        p = _hub_download(str(path), revision)
    if not p.is_dir():
        raise ConfigError(f"{path}: not a folder (a pretrained folder, an mmcl run folder or an open_clip folder)")
    if (p / "recipe.yaml").is_file():
        return _load_run(p, checkpoint, ema)
    if checkpoint is not None or ema:
        raise ConfigError("checkpoint= and ema= are for mmcl run folders")
    if _is_pretrained_dir(p):
        return _load_pretrained_dir(p)
    if (p / "open_clip_config.json").is_file():
        from .openclip.folder import import_open_clip  # builds models, like create_model

        model = import_open_clip(p)
        remember_origin(model, p, "open_clip")
        return model
    found = ", ".join(sorted(x.name for x in p.iterdir())[:10]) or "nothing"
    raise ConfigError(
        f"{p}: not a pretrained folder (config.json with architecture {ARCHITECTURE!r}), an mmcl run folder "
        f"(recipe.yaml) or an open_clip folder (open_clip_config.json); it holds: {found}"
    )


def _preprocess_for(model, path: Path | None) -> Callable:
    data = None
    if path is not None and (path / PREPROCESSOR_NAME).is_file() and _is_pretrained_dir(path):
        data = _read_json(path / PREPROCESSOR_NAME)
        data["input_size"] = tuple(data["input_size"])
    return image_transforms(data or model.vision.data_config(), AugmentConfig(enabled=False))[1]


def load_pretrained(
    path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    ema: bool | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
):
    """``(model, tokenize, preprocess)``, ready for inference or fine-tuning, offline.

    Args:
        path: a pretrained folder (:func:`save_pretrained`), an mmcl run folder (``mmcl train``'s
            output; its latest checkpoint unless ``checkpoint``), an open_clip folder
            (``open_clip_config.json`` + weights, e.g. from :func:`~mmcl.interop.export_open_clip`),
            or a Hub repo id ``owner/name`` holding a pretrained folder.
        checkpoint: run folders: a checkpoint folder in it.
        ema: run folders: load the EMA weights; default: when the checkpoint has them (training
            evaluates the EMA then).
        revision: Hub repo ids: branch, tag or commit.
        device: move the model there.

    Returns:
        model: a :class:`~mmcl.models.DualEncoder` (or :class:`~mmcl.models.ImageEncoder`) in eval mode.
        tokenize: :class:`~mmcl.data.Tokenize`, list of texts -> ``{"input_ids", "attention_mask"}``
            (``model.encode_text(**tokenize(texts))``); the HF tokenizer is ``tokenize.tokenizer``.
            None for an image encoder.
        preprocess: PIL image -> normalised tensor (the eval transform).
    """
    p = Path(path)
    if not p.exists() and _REPO_ID.match(str(path)):
        p = _hub_download(str(path), revision)
    model = from_pretrained(p, checkpoint=checkpoint, ema=ema, device=device)
    backend = _backend_of(model)
    if backend.wraps_library:  # a library's whole CLIP: its own tokenizer and preprocessing
        return model, backend.tokenizer(model.cfg, model), backend.transforms(model, AugmentConfig(enabled=False))[1]
    if _image_only(model):  # an image encoder: no tokenizer
        return model, None, _preprocess_for(model, p)
    tokenizer = load_tokenizer(model.cfg.text)
    return model, Tokenize(tokenizer, model.cfg.text.max_length), _preprocess_for(model, p)


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` on mmcl's models."""

    def save_pretrained(self, save_directory: str | os.PathLike, tokenizer=None, **kwargs) -> Path:
        """See :func:`mmcl.models.pretrained.save_pretrained` (``model_card``, ``license``, ...)."""
        return save_pretrained(self, save_directory, tokenizer=tokenizer, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """See :func:`mmcl.models.pretrained.push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        """See :func:`mmcl.models.pretrained.from_pretrained`."""
        return from_pretrained(path, **kwargs)
