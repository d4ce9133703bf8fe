"""Reading open_clip models into mmcl: an open_clip folder (``open_clip_config.json`` + weights),
a model-config JSON or a model name open_clip knows becomes an mmcl :class:`~mmcl.models.DualEncoder`
with the same weights (timm vision tower + Hugging Face text tower)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import ConfigError
from .config import LOCAL_DIR, OPEN_CLIP_CONFIG, TEXT_DIR, VISION_DIR, WEIGHTS_SEARCH, _is_local_dir, mmcl_model_config
from .weights import from_open_clip_state_dict, load_state_file


def _find_weights(folder: Path) -> Path | None:
    for fname in WEIGHTS_SEARCH:
        if (folder / fname).is_file():
            return folder / fname
    return None


def read_open_clip_config(source: str | os.PathLike) -> tuple[dict, dict, Path | None]:
    """``(model_cfg, preprocess_cfg, folder)`` from an open_clip folder (``open_clip_config.json``),
    a model-config JSON file, or a model name open_clip knows (built in or ``add_model_config``)."""
    p = Path(source)
    if p.is_dir():
        path = p / OPEN_CLIP_CONFIG
        if not path.is_file():
            raise ConfigError(f"{p}: not an open_clip folder (no {OPEN_CLIP_CONFIG})")
        data = json.loads(path.read_text())
        return data.get("model_cfg", data), data.get("preprocess_cfg") or {}, p
    if p.is_file():
        data = json.loads(p.read_text())
        return data.get("model_cfg", data), data.get("preprocess_cfg") or {}, None
    import open_clip

    cfg = open_clip.get_model_config(str(source))
    if cfg is None:
        raise ConfigError(
            f"{source!r} is neither an open_clip folder, a model-config JSON, nor a model name open_clip knows "
            "(open_clip.list_models(), or register one with open_clip.add_model_config)"
        )
    return cfg, {}, None


def import_open_clip(
    source: str | os.PathLike,
    pretrained: str | os.PathLike | None = None,
    *,
    text_dir: str | os.PathLike | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
):
    """An mmcl :class:`~mmcl.models.DualEncoder` (eval mode) with an open_clip model's weights.

    Args:
        source: an open_clip folder (``open_clip_config.json`` + weights, e.g. written by
            :func:`export_open_clip` or an open_clip Hub snapshot), a model-config JSON file, or a
            model name open_clip knows.
        pretrained: the weights (``.safetensors``, or a torch file holding plain tensors, such as
            ``open_clip_pytorch_model.bin`` or a training checkpoint ``epoch_N.pt``); default: the
            folder's own.
        text_dir: a local folder with the text tower's HF ``config.json`` when ``hf_model_name`` is
            not one (e.g. a Hub id); an exported folder's ``text/`` is found by itself.
        tokenizer_dir: the tokenizer folder, when ``hf_tokenizer_name`` is not a local one.

    The model's config names the tokenizer, so ``model.save_pretrained(dir)`` writes a complete
    pretrained folder, and mmcl losses fine-tune it like any mmcl model.
    """
    from ..factory import create_model

    model_cfg, preprocess_cfg, folder = read_open_clip_config(source)
    text_cfg = model_cfg.get("text_cfg") or {}
    vision_dir = None
    if folder is not None:
        hf_name = text_cfg.get("hf_model_name")
        if text_dir is None and not _is_local_dir(hf_name) and (folder / TEXT_DIR / "config.json").is_file():
            text_dir = folder / TEXT_DIR  # an exported folder that moved
        timm_name = (model_cfg.get("vision_cfg") or {}).get("timm_model_name") or ""
        if timm_name.startswith(LOCAL_DIR) and not _is_local_dir(timm_name[len(LOCAL_DIR) :]):
            vision_dir = folder / VISION_DIR if (folder / VISION_DIR / "config.json").is_file() else None
        if tokenizer_dir is None and (folder / "tokenizer_config.json").is_file():
            tokenizer_dir = folder  # open_clip's local-dir reads the tokenizer there too
    weights = Path(pretrained) if pretrained is not None else (_find_weights(folder) if folder else None)
    if weights is None:
        raise ConfigError(f"no open_clip weights for {source}: pass pretrained= (a .safetensors or .bin file)")
    cfg, hf_config = mmcl_model_config(model_cfg, preprocess_cfg, text_dir, tokenizer_dir, vision_dir)
    from ...data.tokenize import load_tokenizer

    try:
        tokenizer = load_tokenizer(cfg.text)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"the tokenizer {cfg.text.tokenizer!r} is not available offline ({str(e).splitlines()[0]}); "
            "pass tokenizer_dir= (a local tokenizer folder)"
        ) from None
    if tokenizer.pad_token_id != hf_config.pad_token_id:
        raise ConfigError(
            f"the tokenizer pads with id {tokenizer.pad_token_id} but the text config's pad_token_id is "
            f"{hf_config.pad_token_id}; open_clip masks by pad_token_id and mmcl by the tokenizer's mask, so "
            "they would differ; supported: equal ids"
        )
    model = create_model(cfg, text_config=hf_config, load_weights=False)
    state = load_state_file(weights)
    state.pop("text.transformer.embeddings.position_ids", None)  # older transformers saved it
    mapped = from_open_clip_state_dict(state)
    own = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in mapped and key in own:
            mapped[key] = mapped[key].reshape(own[key].shape)
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"{weights}: the weights do not fit the model the config describes; missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{weights}: {str(e).splitlines()[0]} ...") from None
    return model.eval()
