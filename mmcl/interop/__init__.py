"""Save, load and share models: pretrained folders (safetensors + configs + tokenizer), the
Hugging Face Hub, and open_clip checkpoints in both directions.

    save_pretrained, from_pretrained, load_pretrained, push_to_hub    mmcl's own folder format
    export_open_clip, import_open_clip, load_open_clip                open_clip interop

open_clip is imported only when its functions run.
"""

from .open_clip import export_open_clip, import_open_clip, load_open_clip
from .pretrained import PretrainedMixin, from_pretrained, load_pretrained, push_to_hub, save_pretrained

__all__ = [
    "PretrainedMixin",
    "export_open_clip",
    "from_pretrained",
    "import_open_clip",
    "load_open_clip",
    "load_pretrained",
    "push_to_hub",
    "save_pretrained",
]
