"""mmcl: multi-modal contrastive learning (image-text and image-image), trained with Accelerate.

Public API:
    load_recipe, check_recipe, Recipe       recipes: read and check (ConfigError for a user's mistake)
    list_sources, list_backends,            what the registries hold: data sources, model backends,
    list_losses, list_tasks                 losses, evaluation tasks
    create_model, DualEncoder               timm vision tower + HF text tower
    create_loss, list_losses                registered contrastive losses
    Trainer, load_run                       train from a recipe; rebuild a trained model
    from_pretrained, load_pretrained        load a saved model folder (safetensors, offline)
    export_open_clip, import_open_clip      move models to and from open_clip
    evaluate                                zero-shot and retrieval evaluators

The names are imported on first use (PEP 562), so ``import mmcl`` and the ``mmcl`` command start
without loading torch, timm or transformers until something needs them.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError, TrainingError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Recipe": ".recipe",
    "load_recipe": ".train.recipes",
    "check_recipe": ".train.recipes",
    "list_backends": ".models.backends",
    "list_sources": ".data.sources",
    "list_tasks": ".eval.tasks",
    "SyntheticConfig": ".data.synthetic",
    "make_corpus": ".data.synthetic",
    "evaluate": ".eval",
    "export_open_clip": ".interop",
    "from_pretrained": ".interop",
    "import_open_clip": ".interop",
    "load_pretrained": ".interop",
    "push_to_hub": ".interop",
    "create_loss": ".losses",
    "list_losses": ".losses",
    "register_loss": ".losses",
    "DualEncoder": ".models",
    "DualEncoderOutput": ".models",
    "ImageEncoder": ".models",
    "create_model": ".models",
    "Trainer": ".train",
    "load_run": ".train",
}

__all__ = [  # noqa: F822 - the lazy names resolve through __getattr__
    "ConfigError",
    "DualEncoder",
    "DualEncoderOutput",
    "ImageEncoder",
    "Recipe",
    "SyntheticConfig",
    "Trainer",
    "TrainingError",
    "create_loss",
    "check_recipe",
    "create_model",
    "evaluate",
    "export_open_clip",
    "from_pretrained",
    "import_open_clip",
    "list_backends",
    "list_losses",
    "list_sources",
    "list_tasks",
    "load_pretrained",
    "load_recipe",
    "load_run",
    "make_corpus",
    "push_to_hub",
    "register_loss",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'mmcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
