"""Writing mmcl models as open_clip models, checked by building them with open_clip.

An exported folder ``OUT/`` holds:

    open_clip_config.json           {"model_cfg", "preprocess_cfg"}: ``create_model_and_transforms("local-dir:OUT")``
    open_clip_model.safetensors     the weights (or open_clip_pytorch_model.bin, a plain state dict)
    NAME.json                       the model config alone: ``open_clip.add_model_config(OUT)``, then
                                    ``create_model_and_transforms(NAME, pretrained=OUT/open_clip_model.safetensors)``
    tokenizer.json, ...             the tokenizer (open_clip's ``get_tokenizer("local-dir:OUT")`` reads it)
    text/config.json                the HF text config (``hf_model_name`` points here, by absolute path)
    vision/config.json              timm's config of the trunk, when it was built with kwargs (likewise)

Exporting builds the written folder with open_clip and compares embeddings (``verify``); an
export that does not match is removed and refused. What can be expressed, and how the configs and
weights map, is in :mod:`mmcl.models.openclip`; reading open_clip models into mmcl is
:func:`mmcl.models.openclip.import_open_clip` (re-exported here).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..data import Tokenize
from ..errors import ConfigError
from ..models.openclip.backend import OpenClipModel, OpenClipTokenize, open_clip_name
from ..models.openclip.config import (
    LOCAL_DIR,
    OPEN_CLIP_CONFIG,
    TEXT_DIR,
    VISION_DIR,
    WEIGHTS_FILES,
    open_clip_model_config,
    timm_config,
)
from ..models.openclip.folder import import_open_clip, read_open_clip_config
from ..models.openclip.weights import _unshared, load_state_file, to_open_clip_state_dict
from ..models.pretrained import _resolve_tokenizer, from_pretrained

__all__ = [
    "export_open_clip",
    "import_open_clip",
    "load_open_clip",
    "load_state_file",
    "read_open_clip_config",
    "verify_open_clip",
]


_NAME = re.compile(r"^[A-Za-z0-9][\w.+-]*$")


def export_open_clip(
    model,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    weights_format: str = "safetensors",
    hf_model_name: str | None = None,
    tokenizer=None,
    verify: bool = True,
    checkpoint: str | os.PathLike | None = None,
    ema: bool | None = None,
) -> dict:
    """Write ``model`` as an open_clip model folder (see the module docstring).

    Args:
        model: a :class:`~mmcl.models.DualEncoder`, or a folder :func:`mmcl.interop.from_pretrained`
            reads (pretrained folder or run folder; ``checkpoint``/``ema`` pick a run's weights).
        out_dir: the folder to write (created).
        name: the model-config name registered by ``open_clip.add_model_config(out_dir)``;
            default: the folder's name.
        weights_format: ``safetensors`` (open_clip_model.safetensors) or ``bin``
            (open_clip_pytorch_model.bin, a plain state dict open_clip loads with weights_only).
        hf_model_name: what ``text_cfg.hf_model_name`` names; default: ``OUT/text`` by absolute
            path. Give a Hub id with the same HF config when publishing the folder.
        tokenizer: default: the one the model's config names.
        verify: build the model with open_clip from the written folder and check that it gives the
            same embeddings (raises ConfigError otherwise).

    Returns:
        {"dir", "name", "model_config", "weights", "preprocess_cfg", "max_abs_diff"} (the last
        one with ``verify``).
    """
    if not isinstance(model, nn.Module):
        model = from_pretrained(model, checkpoint=checkpoint, ema=ema)
    if weights_format not in WEIGHTS_FILES:
        raise ConfigError(f"weights_format {weights_format!r}; valid choices: {', '.join(WEIGHTS_FILES)}")
    out = Path(out_dir).resolve()
    name = name or out.name
    if not _NAME.match(name) or name == Path(OPEN_CLIP_CONFIG).stem:
        raise ConfigError(f"model config name {name!r}: use letters, digits, '-', '_', '.' (not open_clip_config)")
    if isinstance(model, OpenClipModel):  # open_clip's own model: its weights and config as they are
        return _export_native(model, out, name, weights_format, verify)
    text_dir = out / TEXT_DIR
    # every check runs before anything is written
    vision_dir = out / VISION_DIR
    model_cfg, preprocess_cfg = open_clip_model_config(
        model, hf_model_name or str(text_dir), hf_model_name or str(out), str(vision_dir)
    )
    tok = _resolve_tokenizer(model, tokenizer)
    hf_config = model.text.transformer.config
    if tok.pad_token_id != hf_config.pad_token_id:
        raise ConfigError(
            f"the tokenizer pads with id {tok.pad_token_id} but the text config's pad_token_id is "
            f"{hf_config.pad_token_id}: open_clip's HFTextEncoder masks tokens equal to pad_token_id, so "
            "it would attend to different tokens; supported: equal ids"
        )

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written = [Path(f) for f in tok.save_pretrained(out)]
    hf_config.save_pretrained(text_dir)
    written.append(text_dir / "config.json")
    if model_cfg["vision_cfg"]["timm_model_name"].startswith(LOCAL_DIR):
        vision_dir.mkdir(exist_ok=True)
        (vision_dir / "config.json").write_text(json.dumps(timm_config(model), indent=2, default=list) + "\n")
        written.append(vision_dir / "config.json")
    state = _unshared(to_open_clip_state_dict(model))
    weights, config_path = _write_folder(out, name, state, model_cfg, preprocess_cfg, weights_format)
    written += [weights, config_path, out / OPEN_CLIP_CONFIG]
    result = {
        "dir": out,
        "name": name,
        "model_config": config_path,
        "weights": weights,
        "preprocess_cfg": preprocess_cfg,
    }
    if verify:
        try:
            result["max_abs_diff"] = verify_open_clip(model, out, tok)
        except ConfigError:
            _remove(written, out, created)  # leave no unfaithful export behind
            raise
    return result


def _export_native(model: OpenClipModel, out: Path, name: str, weights_format: str, verify: bool) -> dict:
    """An open_clip-backend model: its open_clip config, preprocessing and state dict, unchanged."""
    import open_clip

    model_cfg = open_clip.get_model_config(open_clip_name(model.cfg))
    preprocess_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.preprocess_cfg().items()}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    state = _unshared({k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()})
    weights, config_path = _write_folder(out, name, state, model_cfg, preprocess_cfg, weights_format)
    result = {
        "dir": out,
        "name": name,
        "model_config": config_path,
        "weights": weights,
        "preprocess_cfg": preprocess_cfg,
    }
    if verify:
        try:
            result["max_abs_diff"] = verify_open_clip(model, out, None)
        except ConfigError:
            _remove([weights, config_path, out / OPEN_CLIP_CONFIG], out, created)
            raise
    return result


def _write_folder(
    out: Path, name: str, state: dict, model_cfg: dict, preprocess_cfg: dict, weights_format: str
) -> tuple[Path, Path]:
    """Write an open_clip folder's weights file (the only one: open_clip cannot pick a stale one),
    its model-config JSON and ``open_clip_config.json``; returns ``(weights, model-config JSON)``."""
    weights = out / WEIGHTS_FILES[weights_format]
    for other in WEIGHTS_FILES.values():
        if (out / other).exists() and out / other != weights:
            (out / other).unlink()
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(weights), metadata={"format": "pt"})
    else:
        torch.save(state, weights)
    config_path = out / f"{name}.json"
    config_path.write_text(json.dumps(model_cfg, indent=2) + "\n")
    (out / OPEN_CLIP_CONFIG).write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2) + "\n"
    )
    return weights, config_path


def _remove(files: list[Path], out: Path, created: bool) -> None:
    for f in files:
        f.unlink(missing_ok=True)
    for d in sorted({f.parent for f in files} - {out}, key=lambda d: -len(d.parts)):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


VERIFY_TEXTS = ["a photo of a cat", "two red squares to the left of a blue circle", "x"]


def verify_open_clip(model, folder: str | os.PathLike, tokenizer, atol: float = 1e-4) -> float:
    """Build ``local-dir:folder`` with open_clip and compare its image and text embeddings with
    ``model``'s on a fixed random batch; returns the largest absolute difference."""
    import open_clip

    folder = Path(folder)
    try:
        oc = open_clip.create_model(f"local-dir:{folder}", device="cpu").eval()
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as e:
        detail = " ".join(str(e).split())
        raise ConfigError(
            f"open_clip builds a different model from the exported config ({detail[:1500]}); open_clip creates "
            "the timm trunk with its default settings, then resets its pool to timm_pool"
        ) from None
    oc_tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        size = oc.visual.image_size
        images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        ours_i = model.encode_image(images.to(device)).float().cpu()
        theirs_i = oc.encode_image(images, normalize=True)
        tokenize = (
            OpenClipTokenize(oc_tok)
            if isinstance(model, OpenClipModel)
            else Tokenize(tokenizer, model.cfg.text.max_length)
        )
        batch = tokenize(VERIFY_TEXTS)
        ours_t = model.encode_text(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
        theirs_t = oc.encode_text(oc_tok(VERIFY_TEXTS), normalize=True)
    finally:
        model.train(was_training)
    diff = max((ours_i - theirs_i).abs().max().item(), (ours_t - theirs_t).abs().max().item())
    if not diff <= atol:
        raise ConfigError(
            f"open_clip's embeddings of the exported model differ from mmcl's by up to {diff:.3g} (> {atol}); "
            "the export is not faithful for this model"
        )
    return diff


def load_open_clip(folder: str | os.PathLike, device: str = "cpu"):
    """open_clip's own ``(model, preprocess, tokenizer)`` for an exported folder, in eval mode."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{Path(folder)}", device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{Path(folder)}")
