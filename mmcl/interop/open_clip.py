"""open_clip interop: export an mmcl model as an open_clip model, import an open_clip model into mmcl.

open_clip can express an mmcl :class:`~mmcl.models.DualEncoder` when both towers are ones it wraps
itself: its ``TimmModel`` (``vision_cfg.timm_model_name``) and its ``HFTextEncoder``
(``text_cfg.hf_model_name``). The weights then map one to one:

    mmcl                         open_clip
    vision.trunk.*               visual.trunk.*
    image_proj.weight            visual.head.proj.weight     (timm_proj "linear", no bias)
    text.transformer.*           text.transformer.*
    text_proj.weight             text.proj.weight            (hf_proj_type "linear")
    logit_scale, logit_bias      logit_scale, logit_bias

and the choices map as: the timm trunk's own pool (``timm_pool: ""``) or ``model.vision.pool``
(``timm_pool``); ``model.text.pooler`` mean -> ``mean_pooler``, cls -> ``cls_last_hidden_state_pooler``;
``model.text.max_length`` -> ``context_length``; ``drop_path_rate`` -> ``timm_drop_path``. open_clip
passes no other kwargs to timm, so a tower built with some (``img_size``, ``layers``, ...) is named
``local-dir:OUT/vision``, a timm config folder whose ``model_args`` timm applies itself. Anything
else (an MLP head, a text model open_clip does not know, open_clip's own ViT or text transformer,
attention pools, CoCa) is refused with the setting named and the supported values listed.

An exported folder ``OUT/`` holds:

    open_clip_config.json           {"model_cfg", "preprocess_cfg"}: ``create_model_and_transforms("local-dir:OUT")``
    open_clip_model.safetensors     the weights (or open_clip_pytorch_model.bin, a plain state dict)
    NAME.json                       the model config alone: ``open_clip.add_model_config(OUT)``, then
                                    ``create_model_and_transforms(NAME, pretrained=OUT/open_clip_model.safetensors)``
    tokenizer.json, ...             the tokenizer (open_clip's ``get_tokenizer("local-dir:OUT")`` reads it)
    text/config.json                the HF text config (``hf_model_name`` points here, by absolute path)
    vision/config.json              timm's config of the trunk, when it was built with kwargs (likewise)

Exporting builds the written folder with open_clip and compares embeddings (``verify``); an
export that does not match is removed and refused.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS_FILES = {"safetensors": "open_clip_model.safetensors", "bin": "open_clip_pytorch_model.bin"}
# open_clip folders name their weights in this order of preference (safetensors first)
WEIGHTS_SEARCH = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "pytorch_model.bin",
)
TEXT_DIR = "text"
VISION_DIR = "vision"
LOCAL_DIR = "local-dir:"
POOLERS = {"mean": "mean_pooler", "cls": "cls_last_hidden_state_pooler"}  # mmcl -> open_clip
# timm kwargs open_clip passes to timm.create_model itself (mmcl name -> open_clip vision_cfg key)
TIMM_KWARGS = {"drop_path_rate": "timm_drop_path"}
PREPROCESS_KEYS = ("mean", "std", "interpolation")
# open_clip's PreprocessCfg defaults (what it uses where a config gives none): OpenAI's statistics
OPEN_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPEN_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# (mmcl prefix, open_clip prefix); exact keys first
_EXACT = {
    "image_proj.weight": "visual.head.proj.weight",
    "text_proj.weight": "text.proj.weight",
    "logit_scale": "logit_scale",
    "logit_bias": "logit_bias",
}
_PREFIXES = (("vision.trunk.", "visual.trunk."), ("text.transformer.", "text.transformer."))


def _supported_text_types() -> list[str]:
    from open_clip.hf_configs import arch_dict

    return sorted(arch_dict)


# --------------------------------------------------------------------------------------------------
# Config mapping
# --------------------------------------------------------------------------------------------------


def _timm_default_cfg(name: str):
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)


def timm_config(model) -> dict:
    """timm's own model config (``config.json`` of a ``local-dir:`` timm model) for the vision trunk:
    ``timm.create_model("local-dir:FOLDER")`` builds it with mmcl's kwargs (``model_args``)."""
    from timm.models._pretrained import filter_pretrained_cfg

    v = model.cfg.vision
    args = {k: val for k, val in v.kwargs.items() if k not in TIMM_KWARGS and k != "pretrained_cfg_overlay"}
    pretrained_cfg = filter_pretrained_cfg(dict(model.vision.trunk.pretrained_cfg), remove_source=True)
    pretrained_cfg.pop("architecture", None)
    return {"architecture": v.name, "model_args": args, "pretrained_cfg": pretrained_cfg}


def open_clip_model_config(
    model, hf_model_name: str, hf_tokenizer_name: str | None = None, vision_dir: str | None = None
) -> tuple[dict, dict]:
    """``(model_cfg, preprocess_cfg)`` for open_clip describing ``model``.

    A vision tower built with timm kwargs beyond ``drop_path_rate`` is named
    ``local-dir:VISION_DIR``: timm builds it from :func:`timm_config` written there.

    Raises:
        ConfigError: a setting open_clip cannot express; the message lists every such setting
            with the supported values.
    """
    cfg = model.cfg
    problems: list[str] = []
    if cfg.head != "linear":
        problems.append(
            f"model.head {cfg.head!r}: open_clip's towers have their own MLP shapes (timm_proj/hf_proj_type "
            "'mlp' differ in width and biases); supported: 'linear'"
        )

    v = cfg.vision
    args = timm_config(model)["model_args"]
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        problems.append(f"model.vision.kwargs {args}: not JSON values, so timm cannot rebuild the tower from a config")
    if args and vision_dir is None:
        problems.append(
            f"model.vision.kwargs {sorted(args)}: open_clip builds a timm tower from its name alone; "
            "supported: export_open_clip writes a timm config folder for them"
        )
    vision = {
        "timm_model_name": f"{LOCAL_DIR}{vision_dir}" if args and vision_dir else v.name,
        "timm_model_pretrained": False,
        "timm_pool": v.pool or "",  # "": keep the trunk's own pool, as mmcl does
        "timm_proj": "linear",
        "timm_proj_bias": False,
        "timm_drop": 0.0,
    }
    for key, oc_key in TIMM_KWARGS.items():
        if key in v.kwargs:
            vision[oc_key] = v.kwargs[key]
    if v.patch_dropout:
        vision["patch_dropout"] = v.patch_dropout
    data = model.vision.data_config()
    size = [int(s) for s in data["input_size"][1:]]
    vision["image_size"] = size[0] if size[0] == size[1] else size

    t = cfg.text
    hf_config = model.text.transformer.config
    text_types = _supported_text_types()
    if hf_config.model_type not in text_types or getattr(hf_config, "is_encoder_decoder", False):
        problems.append(
            f"text tower model_type {hf_config.model_type!r}: open_clip's HFTextEncoder knows the widths of "
            f"encoder models only; supported: {', '.join(x for x in text_types if x not in ('mt5', 'm2m_100'))}"
        )
    if t.pooler not in POOLERS:
        problems.append(f"model.text.pooler {t.pooler!r}; supported: {', '.join(POOLERS)}")
    text = {
        "hf_model_name": hf_model_name,
        "hf_tokenizer_name": hf_tokenizer_name or hf_model_name,
        "hf_model_pretrained": False,
        "hf_pooler_type": POOLERS.get(t.pooler, t.pooler),
        "hf_proj_type": "linear",
        "context_length": t.max_length,
    }
    if problems:
        raise ConfigError("open_clip cannot express this model:\n  - " + "\n  - ".join(problems))

    model_cfg = {"embed_dim": cfg.embed_dim, "vision_cfg": vision, "text_cfg": text}
    if cfg.logit_bias_init is not None:
        model_cfg["init_logit_bias"] = float(cfg.logit_bias_init)
    model_cfg["init_logit_scale"] = math.log(cfg.logit_scale_init)
    preprocess_cfg = {
        "size": vision["image_size"],
        "mode": "RGB",
        "mean": [float(x) for x in data["mean"]],
        "std": [float(x) for x in data["std"]],
        "interpolation": data.get("interpolation", "bicubic"),
        "resize_mode": "shortest",  # mmcl's eval transform: shortest side to size, centre crop
    }
    return model_cfg, preprocess_cfg


def _image_size(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            return -1
        value = value[0]
    return int(value)


def mmcl_model_config(
    model_cfg: dict,
    preprocess_cfg: dict | None = None,
    text_dir: str | os.PathLike | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    vision_dir: str | os.PathLike | None = None,
):
    """``(ModelConfig, transformers text config)`` for an open_clip model config.

    ``text_dir`` is a local folder with the text tower's HF ``config.json`` (default:
    ``text_cfg.hf_model_name``, a local folder or a model in the local HF cache); ``tokenizer_dir``
    the tokenizer (default: ``text_cfg.hf_tokenizer_name``, then ``text_dir``); ``vision_dir`` the
    timm config folder of a ``local-dir:`` timm model (default: the folder it names).

    Raises:
        ConfigError: a setting mmcl cannot express (every one is listed, with the supported values).
    """
    from transformers import AutoConfig

    from ..config import ModelConfig, TextConfig, VisionConfig

    problems: list[str] = []
    v = dict(model_cfg.get("vision_cfg") or {})
    t = dict(model_cfg.get("text_cfg") or {})
    if "multimodal_cfg" in model_cfg:
        problems.append("multimodal_cfg (a CoCa captioning decoder); supported: contrastive dual encoders only")
    if not v.get("timm_model_name"):
        problems.append(
            "vision_cfg without timm_model_name (open_clip's own ViT / ModifiedResNet tower); "
            "supported: timm towers (vision_cfg.timm_model_name)"
        )
    if not t.get("hf_model_name"):
        problems.append(
            "text_cfg without hf_model_name (open_clip's own text transformer); "
            "supported: Hugging Face towers (text_cfg.hf_model_name)"
        )
    proj = v.get("timm_proj", "linear")
    if v.get("timm_model_name") and proj != "linear":
        problems.append(f"vision_cfg.timm_proj {proj!r}; supported: 'linear'")
    if v.get("timm_proj_bias"):
        problems.append("vision_cfg.timm_proj_bias true; supported: false (mmcl's linear head has no bias)")
    pool = v.get("timm_pool", "avg")
    if pool in ("abs_attn", "rot_attn"):
        problems.append(f"vision_cfg.timm_pool {pool!r} (attention pooling); supported: '' or a timm global pool")
    size = _image_size(v.get("image_size", 224))
    if size == -1:
        problems.append(f"vision_cfg.image_size {v.get('image_size')} (not square); supported: square sizes")
    hf_proj = t.get("hf_proj_type", "mlp")
    if t.get("hf_model_name") and hf_proj != "linear":
        problems.append(f"text_cfg.hf_proj_type {hf_proj!r}; supported: 'linear'")
    pooler = t.get("hf_pooler_type", "mean_pooler")
    mmcl_pooler = {oc: m for m, oc in POOLERS.items()}.get(pooler)
    if t.get("hf_model_name") and mmcl_pooler is None:
        problems.append(
            f"text_cfg.hf_pooler_type {pooler!r}; supported: {', '.join(POOLERS.values())} "
            "(cls_pooler uses the HF model's own tanh pooler)"
        )
    if problems:
        raise ConfigError("mmcl cannot express this open_clip model:\n  - " + "\n  - ".join(problems))
    if v.get("timm_drop"):
        warnings.warn(
            f"vision_cfg.timm_drop {v['timm_drop']} (head dropout) has no mmcl counterpart; left out", stacklevel=3
        )

    name, kwargs = _timm_name_and_args(v["timm_model_name"], vision_dir)
    if v.get("timm_drop_path") is not None:
        kwargs["drop_path_rate"] = v["timm_drop_path"]
    pre = {"mean": OPEN_CLIP_MEAN, "std": OPEN_CLIP_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    pre.update({k: val for k, val in (preprocess_cfg or {}).items() if val is not None})
    if pre["resize_mode"] != "shortest":
        warnings.warn(
            f"preprocess_cfg.resize_mode {pre['resize_mode']!r}: mmcl's eval transform resizes the shortest side "
            "and centre-crops (open_clip's 'shortest')",
            stacklevel=3,
        )
    default = _timm_default_cfg(name)
    overlay = {}
    for key in PREPROCESS_KEYS:
        want = tuple(pre[key]) if isinstance(pre[key], (list, tuple)) else pre[key]
        have = getattr(default, key, None) if default is not None else None
        have = tuple(have) if isinstance(have, (list, tuple)) else have
        if want != have:
            overlay[key] = list(want) if isinstance(want, tuple) else want
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    # the side mmcl infers without image_size: a ViT's img_size, else timm's default input size
    default_size = kwargs.get(
        "img_size", default.input_size[-1] if default is not None and default.input_size else None
    )
    default_size = _image_size(default_size)
    vision = VisionConfig(
        name=name,
        kwargs=kwargs,
        image_size=None if size == default_size else size,
        pool=pool or None,
        patch_dropout=float(v.get("patch_dropout") or 0.0),
    )

    text_path = _local_text_config_dir(t["hf_model_name"], text_dir)
    try:
        hf_config = AutoConfig.from_pretrained(text_path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"the text tower's HF config {text_path!r} is not available offline ({e}); pass text_dir= "
            "(a local folder with its config.json)"
        ) from None
    # a local folder, else a model id the HF cache may hold (checked when the tokenizer is loaded)
    tok = tokenizer_dir or _first_dir(t.get("hf_tokenizer_name"), t["hf_model_name"], text_dir)
    tok = tok or t.get("hf_tokenizer_name") or t["hf_model_name"]
    text = TextConfig(
        config=hf_config.to_dict(),
        tokenizer=str(tok),
        pooler=mmcl_pooler,
        max_length=int(t.get("context_length", 77)),
    )
    scale = model_cfg.get("init_logit_scale", math.log(1 / 0.07))
    cfg = ModelConfig(
        vision=vision,
        text=text,
        embed_dim=int(model_cfg["embed_dim"]),
        head="linear",
        logit_scale_init=min(math.exp(float(scale)), 100.0),
        logit_scale_max=100.0,  # open_clip's training clamp
        logit_bias_init=model_cfg.get("init_logit_bias"),
    )
    return cfg, hf_config


def _timm_name_and_args(timm_model_name: str, vision_dir) -> tuple[str, dict]:
    """A timm model name, or a ``local-dir:`` timm config folder -> (architecture, kwargs)."""
    if timm_model_name.startswith("hf-hub:"):
        raise ConfigError(
            f"vision_cfg.timm_model_name {timm_model_name!r} names a Hub model; supported offline: timm model "
            "names and local-dir: folders (pass vision_dir= with its config.json)"
        )
    if not timm_model_name.startswith(LOCAL_DIR) and vision_dir is None:
        return timm_model_name, {}
    folder = Path(vision_dir) if vision_dir is not None else Path(timm_model_name[len(LOCAL_DIR) :])
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"timm config {path} not found (vision_cfg.timm_model_name {timm_model_name!r}); pass vision_dir="
        )
    data = json.loads(path.read_text())
    if "architecture" not in data:
        raise ConfigError(f"{path}: not a timm model config (no 'architecture')")
    return data["architecture"], dict(data.get("model_args") or {})


def _is_local_dir(value) -> bool:
    return value is not None and Path(str(value)).is_dir()


def _first_dir(*candidates):
    for c in candidates:
        if _is_local_dir(c) and (Path(c) / "tokenizer_config.json").is_file():
            return str(c)
    return None


def _local_text_config_dir(hf_model_name: str, text_dir) -> str:
    if text_dir is not None:
        return str(text_dir)
    return hf_model_name  # a local folder, or a model id found in the HF cache (local_files_only)


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def to_open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """mmcl's state dict under open_clip's names (see the module docstring)."""
    out = {}
    for key, value in model.state_dict().items():
        out[_rename(key, to_open_clip=True)] = value
    return out


def from_open_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip state dict under mmcl's names."""
    return {_rename(k, to_open_clip=False): v for k, v in state.items()}


def _rename(key: str, to_open_clip: bool) -> str:
    exact = _EXACT if to_open_clip else {v: k for k, v in _EXACT.items()}
    if key in exact:
        return exact[key]
    for mmcl_prefix, oc_prefix in _PREFIXES:
        src, dst = (mmcl_prefix, oc_prefix) if to_open_clip else (oc_prefix, mmcl_prefix)
        if key.startswith(src):
            return dst + key[len(src) :]
    side = "mmcl" if to_open_clip else "open_clip"
    raise ConfigError(f"{side} parameter {key!r} has no counterpart on the other side")


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own storage (safetensors refuses shared memory)."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from a torch file loaded with ``weights_only=True``
    (plain tensors and containers; a pickle that would run code is refused, not run). open_clip
    training checkpoints (``{"state_dict": ...}``) and DDP / torch.compile prefixes are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"open_clip weights not found: {path}")
    from ..weights import load_state_file as read_weights

    state = read_weights(path, "open_clip weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------

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
    from .pretrained import _resolve_tokenizer, from_pretrained

    if not isinstance(model, nn.Module):
        model = from_pretrained(model, checkpoint=checkpoint, ema=ema)
    if weights_format not in WEIGHTS_FILES:
        raise ConfigError(f"weights_format {weights_format!r}; valid choices: {', '.join(WEIGHTS_FILES)}")
    out = Path(out_dir).resolve()
    name = name or out.name
    if not _NAME.match(name) or name == Path(OPEN_CLIP_CONFIG).stem:
        raise ConfigError(f"model config name {name!r}: use letters, digits, '-', '_', '.' (not open_clip_config)")
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
    weights = out / WEIGHTS_FILES[weights_format]
    for other in WEIGHTS_FILES.values():  # one weights file, so open_clip cannot pick a stale one
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


def _remove(files: list[Path], out: Path, created: bool) -> None:
    for f in files:
        f.unlink(missing_ok=True)
    for d in sorted({f.parent for f in files} - {out}, key=lambda d: -len(d.parts)):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


VERIFY_TEXTS = ["a photo of a cat", "two red squares to the left of a blue circle", "x"]


@torch.no_grad()
def verify_open_clip(model, folder: str | os.PathLike, tokenizer, atol: float = 1e-4) -> float:
    """Build ``local-dir:folder`` with open_clip and compare its image and text embeddings with
    ``model``'s on a fixed random batch; returns the largest absolute difference."""
    import open_clip

    from ..data import Tokenize

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
        batch = Tokenize(tokenizer, model.cfg.text.max_length)(VERIFY_TEXTS)
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


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


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
    from ..models import create_model

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
    from ..data.tokenize import load_tokenizer

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


def load_open_clip(folder: str | os.PathLike, device: str = "cpu"):
    """open_clip's own ``(model, preprocess, tokenizer)`` for an exported folder, in eval mode."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{Path(folder)}", device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{Path(folder)}")
