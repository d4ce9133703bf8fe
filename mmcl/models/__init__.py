from .dual_encoder import DualEncoder, DualEncoderOutput
from .factory import create_model
from .image_encoder import ImageEncoder, ImageEncoderOutput
from .text import HFTextTower, text_model_config
from .vision import TimmVisionTower

__all__ = [
    "DualEncoder",
    "DualEncoderOutput",
    "HFTextTower",
    "ImageEncoder",
    "ImageEncoderOutput",
    "TimmVisionTower",
    "create_model",
    "text_model_config",
]
