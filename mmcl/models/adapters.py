"""Parameter-efficient fine-tuning with the ``peft`` library: LoRA (Hu et al. 2021) and DoRA
(Liu et al. 2024) adapters in the towers of any backend (``model.adapter`` in a recipe).

The adapters are injected in place (``peft.inject_adapter_in_model``), so the model keeps its own
class and forward; every targeted ``nn.Linear`` ``W`` becomes ``W x + (alpha / r) B A x`` with
``A: (r, in)``, ``B: (out, r)`` and ``B = 0`` at the start (a convolution ``k x k``: ``A`` is an
``r``-channel ``k x k`` convolution, ``B`` a 1x1 one), so the model's embeddings at
initialisation are the base model's. All other parameters are frozen, except those named by
``model.adapter.trainable``.

Weights: a checkpoint's ``model.safetensors`` holds the base weights and the adapters (peft's
``base_layer`` / ``lora_A`` / ``lora_B`` names), so resuming and loading a run rebuild the same
model; ``adapters.safetensors`` + ``adapter_config.json`` beside it hold the adapters alone (peft's
format, module names relative to the mmcl model). :func:`merge_adapters` folds the updates into
plain weights: exports (``mmcl export``) and WiSE-FT use it, so they need no peft to load.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..recipe import AdapterConfig

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_NAME = "default"


def _peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("model.adapter needs the peft package: pip install 'peft>=0.10'") from None
    return peft


def tower_prefixes(model: nn.Module) -> dict[str, str]:
    """Where each tower lives in ``model``: ``{"vision": module name, "text": module name}``."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "visual"):  # open_clip: CLIP (text at the top) or CustomTextCLIP
        return {"vision": "model.visual", "text": "model.text" if hasattr(inner, "text") else "model.transformer"}
    if inner is not None and hasattr(inner, "vision_model"):  # transformers CLIPModel / SiglipModel
        return {"vision": "model.vision_model", "text": "model.text_model"}
    names = ("vision", "text", "vision2")  # mmcl's DualEncoder and ImageEncoder
    return {n: n for n in names if isinstance(getattr(model, n, None), nn.Module)}


def _adaptable(module: nn.Module) -> bool:
    """What peft's LoRA adapts: Linear layers, convolutions (a ResNet tower) and nn.MultiheadAttention."""
    return isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))


def target_names(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """The full module names ``cfg.target_modules`` selects (a ``ConfigError`` names what is wrong)."""
    prefixes, found = tower_prefixes(model), []
    mha_parts = {f"{name}.out_proj" for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    for tower, wanted in cfg.target_modules.items():
        if tower not in prefixes:
            raise ConfigError(
                f"model.adapter.target_modules: {tower!r} is not a tower of this model; valid choices: "
                f"{', '.join(prefixes)}"
            )
        prefix = prefixes[tower]
        inside = [(n, m) for n, m in model.named_modules() if n.startswith(prefix + ".") and _adaptable(m)]
        for target in wanted:
            hits = [n for n, _ in inside if n == f"{prefix}.{target}" or n.endswith("." + target)]
            inside_mha = [n for n in hits if n in mha_parts]
            if inside_mha:
                raise ConfigError(
                    f"model.adapter.target_modules.{tower}: {target!r} is the out_proj of an nn.MultiheadAttention, "
                    "whose forward reads its weight directly (an adapter there would do nothing); target the "
                    f"attention module instead ({inside_mha[0].rsplit('.', 2)[-2]!r}: peft adapts in_proj and out_proj)"
                )
            if not hits:
                ends = sorted({n.rsplit(".", 1)[-1] for n, _ in inside})
                raise ConfigError(
                    f"model.adapter.target_modules.{tower}: no Linear layer of the {tower} tower is named {target!r}; "
                    f"its Linear/attention layers end in: {', '.join(ends[:20]) or '(none)'}"
                )
            found += [n for n in hits if n not in found]
    return found


def peft_config(model: nn.Module, cfg: AdapterConfig):
    """The ``peft.LoraConfig`` of ``cfg`` for ``model`` (its targets as full module names)."""
    peft = _peft()
    return peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_names(model, cfg),
        use_dora=cfg.method == "dora",
        bias="none",
    )


def add_adapters(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Inject ``cfg``'s adapters into ``model`` in place and freeze everything else (except
    ``cfg.trainable``); returns ``model``."""
    peft = _peft()
    config = peft_config(model, cfg)
    try:
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except (ValueError, TypeError, NotImplementedError) as e:  # e.g. a method peft has not for a layer type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.adapter: peft cannot adapt this model as asked ({first})") from None
    for name, p in model.named_parameters():
        adapter = "lora_" in name
        p.requires_grad_(adapter or any(re.search(pattern, name) for pattern in cfg.trainable))
    for pattern in cfg.trainable:
        if not any(re.search(pattern, n) for n, _ in model.named_parameters()):
            raise ConfigError(f"model.adapter.trainable: {pattern!r} matches no parameter of the model")
    return model


def has_adapters(model: nn.Module) -> bool:
    """Whether peft adapters are injected in ``model`` (peft marks such a model with ``peft_config``:
    a plain model answers without importing peft)."""
    if not hasattr(model, "peft_config"):
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def merge_adapters(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter folded into its base layer (plain modules, no peft
    left: ``W + (alpha / r) B A``); ``model`` itself when it has none. The copy's ``cfg.adapter``
    is None, so it saves and loads as a plain model."""
    if not has_adapters(model):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(model)
    tuned = [(n, m) for n, m in merged.named_modules() if isinstance(m, BaseTunerLayer)]
    outer = [(n, m) for n, m in tuned if not any(n.startswith(o + ".") for o, _ in tuned)]
    for name, module in outer:  # an attention's inner out_proj adapter is folded by the attention's
        if hasattr(module, "unload_and_optionally_merge_module"):  # peft's MultiheadAttention (and alike)
            base = module.unload_and_optionally_merge_module(merge=True, safe_merge=True, adapter_names=None)
        else:
            module.merge(safe_merge=True)
            base = module.get_base_layer()
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent) if parent else merged, child, base)
    for sub in merged.modules():
        if isinstance(sub, BaseTunerLayer):
            raise RuntimeError(f"an adapter was left unmerged in {type(sub).__name__}")
    if hasattr(merged, "peft_config"):
        del merged.peft_config
    if dataclasses.is_dataclass(getattr(merged, "cfg", None)):
        merged.cfg = dataclasses.replace(merged.cfg, adapter=None)
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged


def save_adapters(model: nn.Module, folder: str | Path) -> Path | None:
    """Write the adapters alone (``adapters.safetensors``, ``adapter_config.json``) into ``folder``;
    nothing when ``model`` has none."""
    if not has_adapters(model):
        return None
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS))
    config = model.peft_config[ADAPTER_NAME].to_dict()
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
    return folder / ADAPTER_WEIGHTS


def load_adapters(model: nn.Module, folder: str | Path) -> None:
    """Load ``adapters.safetensors`` from ``folder`` into a model built with the same adapters."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(Path(folder) / ADAPTER_WEIGHTS)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{folder}/{ADAPTER_WEIGHTS} does not fit the model's adapters "
            f"(missing: {missing[:3]}, unexpected: {list(result.unexpected_keys)[:3]})"
        )


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """``(trainable parameters, all parameters)``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
