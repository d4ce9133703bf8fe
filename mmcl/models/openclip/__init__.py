"""open_clip models in mmcl: config translation (:mod:`.config`), state-dict mapping
(:mod:`.weights`) and reading open_clip folders into mmcl models (:mod:`.folder`). Writing mmcl
models as open_clip folders is :func:`mmcl.interop.export_open_clip`. open_clip itself is imported
only when these functions run."""

from .config import mmcl_model_config, open_clip_model_config, timm_config
from .folder import import_open_clip, read_open_clip_config
from .weights import from_open_clip_state_dict, load_state_file, to_open_clip_state_dict

__all__ = [
    "from_open_clip_state_dict",
    "import_open_clip",
    "load_state_file",
    "mmcl_model_config",
    "open_clip_model_config",
    "read_open_clip_config",
    "timm_config",
    "to_open_clip_state_dict",
]
