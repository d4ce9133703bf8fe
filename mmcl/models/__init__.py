from .dual_encoder import DualEncoder, DualEncoderOutput
from .factory import create_model
from .text import HFTextTower, text_model_config
from .vision import TimmVisionTower

__all__ = ["DualEncoder", "DualEncoderOutput", "HFTextTower", "TimmVisionTower", "create_model", "text_model_config"]
