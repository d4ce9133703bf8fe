"""mmcl: multi-modal contrastive learning (image-text and image-image), trained with Accelerate.

Public API:
    load_recipe, Recipe, ConfigError        recipes and their typed sections
    create_model, DualEncoder               timm vision tower + HF text tower
    create_loss, list_losses                registered contrastive losses
    Trainer, load_run                       train from a recipe; rebuild a trained model
    from_pretrained, load_pretrained        load a saved model folder (safetensors, offline)
    export_open_clip, import_open_clip      move models to and from open_clip
    evaluate                                zero-shot and retrieval evaluators
"""

from .config import ConfigError, Recipe, load_recipe
from .data.synthetic import SyntheticConfig, make_corpus
from .eval import evaluate
from .interop import export_open_clip, from_pretrained, import_open_clip, load_pretrained, push_to_hub
from .losses import create_loss, list_losses, register_loss
from .models import DualEncoder, DualEncoderOutput, ImageEncoder, create_model
from .train import Trainer, TrainingError, load_run

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DualEncoder",
    "DualEncoderOutput",
    "ImageEncoder",
    "Recipe",
    "SyntheticConfig",
    "Trainer",
    "TrainingError",
    "create_loss",
    "create_model",
    "evaluate",
    "export_open_clip",
    "from_pretrained",
    "import_open_clip",
    "load_pretrained",
    "push_to_hub",
    "list_losses",
    "load_recipe",
    "load_run",
    "make_corpus",
    "register_loss",
]
