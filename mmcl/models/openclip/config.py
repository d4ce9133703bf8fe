"""Translating model configs between mmcl and open_clip, both ways.

open_clip can express an mmcl :class:`~mmcl.models.DualEncoder` when both towers are ones it wraps
itself: its ``TimmModel`` (``vision_cfg.timm_model_name``) and its ``HFTextEncoder``
(``text_cfg.hf_model_name``). The choices map as: the timm trunk's own pool (``timm_pool: ""``) or
``model.vision.pool`` (``timm_pool``); ``model.text.pooler`` mean -> ``mean_pooler``, cls ->
``cls_last_hidden_state_pooler``; ``model.text.max_length`` -> ``context_length``;
``drop_path_rate`` -> ``timm_drop_path``. open_clip passes no other kwargs to timm, so a tower built
with some (``img_size``, ``layers``, ...) is named ``local-dir:OUT/vision``, a timm config folder whose
``model_args`` timm applies itself. Anything else (an MLP head, a text model open_clip does not
know, open_clip's own ViT or text transformer, attention pools, CoCa) is refused with the setting
named and the supported values listed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from ...errors import ConfigError
from ...recipe import ModelConfig, TextConfig, VisionConfig

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


def _supported_text_types() -> list[str]:
    from open_clip.hf_configs import arch_dict

    return sorted(arch_dict)


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


def _import_problems(model_cfg: dict) -> list[str]:
    """Every setting of an open_clip model config that mmcl's dual encoder cannot express."""
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
    if _image_size(v.get("image_size", 224)) == -1:
        problems.append(f"vision_cfg.image_size {v.get('image_size')} (not square); supported: square sizes")
    hf_proj = t.get("hf_proj_type", "mlp")
    if t.get("hf_model_name") and hf_proj != "linear":
        problems.append(f"text_cfg.hf_proj_type {hf_proj!r}; supported: 'linear'")
    pooler = t.get("hf_pooler_type", "mean_pooler")
    if t.get("hf_model_name") and pooler not in POOLERS.values():
        problems.append(
            f"text_cfg.hf_pooler_type {pooler!r}; supported: {', '.join(POOLERS.values())} "
            "(cls_pooler uses the HF model's own tanh pooler)"
        )
    return problems


def _vision_config(v: dict, preprocess_cfg: dict | None, vision_dir):
    """mmcl's vision section for open_clip's ``vision_cfg`` and ``preprocess_cfg``."""
    if v.get("timm_drop"):
        warnings.warn(
            f"vision_cfg.timm_drop {v['timm_drop']} (head dropout) has no mmcl counterpart; left out", stacklevel=4
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
            stacklevel=4,
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
    size = _image_size(v.get("image_size", 224))
    return VisionConfig(
        name=name,
        kwargs=kwargs,
        image_size=None if size == _image_size(default_size) else size,
        pool=v.get("timm_pool", "avg") or None,
        patch_dropout=float(v.get("patch_dropout") or 0.0),
    )


def _text_config(t: dict, text_dir, tokenizer_dir):
    """``(mmcl's text section, the transformers config)`` for open_clip's ``text_cfg``."""
    from transformers import AutoConfig

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
    pooler = {oc: m for m, oc in POOLERS.items()}[t.get("hf_pooler_type", "mean_pooler")]
    text = TextConfig(
        config=hf_config.to_dict(), tokenizer=str(tok), pooler=pooler, max_length=int(t.get("context_length", 77))
    )
    return text, hf_config


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
    problems = _import_problems(model_cfg)
    if problems:
        raise ConfigError("mmcl cannot express this open_clip model:\n  - " + "\n  - ".join(problems))
    vision = _vision_config(dict(model_cfg["vision_cfg"]), preprocess_cfg, vision_dir)
    text, hf_config = _text_config(dict(model_cfg["text_cfg"]), text_dir, tokenizer_dir)
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
