"""Models in other formats and places: open_clip export (and import, from :mod:`mmcl.models`),
pretrained folders and the Hugging Face Hub.

    save_pretrained, from_pretrained, load_pretrained, push_to_hub    mmcl's own folder format
    export_open_clip, import_open_clip, load_open_clip                open_clip interop

open_clip is imported only when its functions run.
"""

from ..models.pretrained import PretrainedMixin, from_pretrained, load_pretrained, push_to_hub, save_pretrained
from .open_clip import export_open_clip, import_open_clip, load_open_clip

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
