"""Save, load and share models: pretrained folders (safetensors + configs + tokenizer), the
Hugging Face Hub, and open_clip checkpoints in both directions.

    save_pretrained, from_pretrained, load_pretrained, push_to_hub    mmcl's own folder format
    export_open_clip, import_open_clip, load_open_clip                open_clip interop

open_clip is imported only when its functions run, and the names here on first use (so the
``mmcl export`` parser, in :mod:`mmcl.interop.cli`, loads without torch).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_open_clip": ".open_clip",
    "import_open_clip": ".open_clip",
    "load_open_clip": ".open_clip",
    "PretrainedMixin": ".pretrained",
    "from_pretrained": ".pretrained",
    "load_pretrained": ".pretrained",
    "push_to_hub": ".pretrained",
    "save_pretrained": ".pretrained",
}

__all__ = [  # noqa: F822 - resolved by __getattr__
    "PretrainedMixin",
    "export_open_clip",
    "from_pretrained",
    "import_open_clip",
    "load_open_clip",
    "load_pretrained",
    "push_to_hub",
    "save_pretrained",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmcl.interop' has no attribute {name!r}")
