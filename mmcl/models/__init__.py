"""Models: backends behind a registry (:mod:`.backends`), the towers and encoders they build,
and the folders models are saved in and read from (pretrained folders, run folders, open_clip)."""

from . import hf_clip  # noqa: F401 - registers the hf backend
from .backends import BACKENDS, ModelBackend, check_model, list_backends, register_backend
from .dual_encoder import DualEncoder, DualEncoderOutput
from .factory import create_model, weights_summary
from .image_encoder import ImageEncoder, ImageEncoderOutput
from .momentum import momentum_update
from .openclip import backend as _open_clip_backend  # noqa: F401 - registers the open_clip backend
from .pretrained import PretrainedMixin, from_pretrained, load_pretrained, push_to_hub, save_pretrained
from .run_folder import latest_checkpoint, list_checkpoints, load_run
from .text import HFTextTower, text_model_config
from .vision import TimmVisionTower

__all__ = [
    "BACKENDS",
    "DualEncoder",
    "DualEncoderOutput",
    "HFTextTower",
    "ImageEncoder",
    "ImageEncoderOutput",
    "ModelBackend",
    "PretrainedMixin",
    "TimmVisionTower",
    "check_model",
    "create_model",
    "from_pretrained",
    "latest_checkpoint",
    "list_backends",
    "list_checkpoints",
    "load_pretrained",
    "load_run",
    "momentum_update",
    "push_to_hub",
    "register_backend",
    "save_pretrained",
    "text_model_config",
    "weights_summary",
]
