"""One protocol for every model the evaluators take.

An adapter has ``encode_image(pixels) -> (N, D)`` and ``encode_text(list[str]) -> (N, D)``, both
L2-normalised float32 on the CPU-or-GPU device the model lives on, plus ``preprocess`` (PIL image
-> pixel tensor, the model's own eval transform), ``name`` and ``pretrained`` (recorded in result
files, as CLIP_benchmark does). Three adapters cover the models users bring:

- :class:`MmclAdapter`: a run folder written by ``mmcl train`` (any checkpoint in it), a
  pretrained folder, or a recipe YAML (the model it describes, before training: a baseline);
- :class:`OpenClipAdapter`: an open_clip architecture with a local weights file, or a model object;
- :class:`HFClipAdapter`: a transformers ``CLIPModel``/``SiglipModel``/``VisionTextDualEncoderModel``
  folder.

:func:`load_adapter` picks one from a model string. Nothing is downloaded and no remote code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError, UnsafeFileError

MODEL_TYPES = ("auto", "mmcl", "open_clip", "hf")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _features(output) -> torch.Tensor:
    """transformers >= 5 returns a model output whose ``pooler_output`` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _Adapter:
    name: str
    pretrained: str
    preprocess: Callable
    device: torch.device

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._encode_image(images.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self._encode_text(list(texts)).float(), dim=-1)

    @torch.no_grad()
    def encode_paired(self, images: torch.Tensor, second: bool = False) -> torch.Tensor:
        """Embeddings for image <-> image retrieval: the first (``second=False``) or second image
        modality. One image tower serves both unless the model has a second one."""
        return self.encode_image(images)

    def vision_tower(self, pretrained: bool = True):
        """The model's timm vision tower (``pretrained=False``: the same architecture, freshly
        initialised), for the tasks that read its feature map or fine-tune it (dense_probe, finetune)."""
        raise ConfigError(
            f"{self.name}: the dense_probe and finetune tasks read and train an mmcl model's timm vision tower; "
            "load it into an mmcl recipe first (model.init_from), or use the other tasks"
        )


class MmclAdapter(_Adapter):
    """Wraps a :class:`~mmcl.models.DualEncoder` with its tokenizer and eval transform, or an
    :class:`~mmcl.models.ImageEncoder` (no tokenizer): then ``encode_image`` gives the backbone
    features (what kNN and linear probes read) and ``encode_paired`` the two heads' embeddings."""

    def __init__(
        self,
        model,
        tokenize: Callable[[list[str]], dict],
        preprocess: Callable,
        device: torch.device,
        name: str = "mmcl",
        pretrained: str = "",
    ):
        self.model = model.to(device).eval()
        self.tokenize = tokenize
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.name, self.pretrained = name, pretrained

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path | None = None, device=None) -> MmclAdapter:
        """The model of a run folder at ``checkpoint`` (default: the run's latest)."""
        from ..models.backends import get_backend
        from ..models.run_folder import load_run

        model, _, recipe, ckpt = load_run(run_dir, checkpoint)
        backend = get_backend(recipe.model)  # the model's own tokenizer and eval transform
        _, eval_tf = backend.transforms(model, recipe.data.augment)
        adapter = cls(
            model,
            backend.tokenizer(recipe.model, model),
            eval_tf,
            device or default_device(),
            name=recipe.name,
            pretrained=Path(ckpt).name,
        )
        adapter.recipe, adapter.checkpoint = recipe, Path(ckpt)
        return adapter

    @classmethod
    def from_recipe(cls, path: str | Path, device=None) -> MmclAdapter:
        """The model a recipe describes before any training: the baseline of a run.

        Built as ``mmcl train`` builds it, with the recipe's seed (``train.seed``), so it is the
        model the run starts from: random init, or the weights the recipe names
        (``model.vision.weights``, a pretrained text tower ``model.text.path``, ``model.init_from``);
        with the recipe's tokenizer and eval transform. Named ``<recipe name> (random init)`` in
        result records when no tower loads weights, ``<recipe name> (init)`` otherwise; ``pretrained``
        says where each tower's weights came from. The global random state is left as it was.
        """
        from ..data import Tokenize, image_transforms, load_tokenizer
        from ..models import create_model, text_model_config
        from ..models.backends import check_model
        from ..models.factory import weights_summary
        from ..recipe import read_recipe

        recipe = read_recipe(path)
        m = recipe.model
        check_model(m)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.train.seed)
            if m.kind == "image_image":
                model, tokenize = create_model(m), None
            else:
                text_config = text_model_config(m.text)
                tokenize = Tokenize(load_tokenizer(m.text), m.text.max_length)
                model = create_model(m, text_config=None if m.text.path else text_config)
        _, eval_tf = image_transforms(model.vision.data_config(), recipe.data.augment)
        init = weights_summary(model)
        random = not m.init_from and all(part.endswith("random init") for part in init.split("; "))
        name = f"{recipe.name} ({'random init' if random else 'init'})"
        adapter = cls(model, tokenize, eval_tf, device or default_device(), name=name, pretrained=f"init: {init}")
        adapter.recipe = recipe
        return adapter

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None) -> MmclAdapter:
        """A pretrained folder written by ``save_pretrained`` / ``mmcl export pretrained``."""
        from ..models.pretrained import load_pretrained

        model, tokenize, preprocess = load_pretrained(path)
        return cls(model, tokenize, preprocess, device or default_device(), name=Path(path).name, pretrained=str(path))

    @property
    def image_image(self) -> bool:
        return getattr(self.model, "kind", "") == "image_image"

    def _encode_image(self, images):
        if self.image_image:
            return self.model.features(images)
        return self.model.encode_image(images)

    def _encode_text(self, texts):
        if self.tokenize is None:
            raise ConfigError(f"{self.name}: an image-image model has no text tower; image tasks only (knn, ...)")
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.model.encode_text(**batch)

    def vision_tower(self, pretrained: bool = True):
        if pretrained:
            return self.model.vision
        from ..models.vision import TimmVisionTower

        return TimmVisionTower(self.model.cfg.vision, load_weights=False)

    @torch.no_grad()
    def encode_paired(self, images: torch.Tensor, second: bool = False) -> torch.Tensor:
        if not self.image_image:
            return self.encode_image(images)
        images = images.to(self.device)
        out = self.model.encode_image2(images) if second else self.model.encode_image(images)
        return F.normalize(out.float(), dim=-1)


class OpenClipAdapter(_Adapter):
    """An open_clip model: ``from_name("ViT-B-32", pretrained="weights.pt")`` or a model object."""

    def __init__(self, model, preprocess: Callable, tokenizer: Callable, device=None, name="", pretrained=""):
        self.device = torch.device(device or default_device())
        self.model = model.to(self.device).eval()
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.name, self.pretrained = name, pretrained

    @classmethod
    def from_name(
        cls, name: str, pretrained: str | None = None, model_config: str | None = None, device=None
    ) -> OpenClipAdapter:
        """Build ``name`` offline. ``pretrained`` is a local checkpoint (.pt/.bin/.safetensors, loaded
        with ``weights_only``); ``model_config`` a model-config JSON registered under its file stem."""
        import open_clip

        if model_config is not None:
            open_clip.add_model_config(model_config)
            name = name or Path(model_config).stem
        if not name.startswith(("local-dir:", "hf-hub:")) and name not in open_clip.list_models():
            raise ConfigError(
                f"open_clip has no architecture {name!r}; use a name from open_clip.list_models() "
                "(e.g. ViT-B-32), 'local-dir:DIR', or pass a model-config JSON"
            )
        if pretrained is not None and not Path(pretrained).is_file():
            raise ConfigError(f"open_clip weights {pretrained!r} not found (a local .pt/.bin/.safetensors file)")
        if pretrained is not None:
            from ..weights import load_state_file

            # read once with mmcl's safe loader first: a refusal is one line naming the file, where
            # open_clip's own loader would end in a traceback
            load_state_file(pretrained, "open_clip weights file")
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")
        return cls(model, preprocess, open_clip.get_tokenizer(name), device, name=name, pretrained=pretrained or "")

    def _encode_image(self, images):
        return self.model.encode_image(images)

    def _encode_text(self, texts):
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class HFClipAdapter(_Adapter):
    """A transformers CLIP-style model folder (``get_image_features``/``get_text_features``)."""

    SUPPORTED = ("clip", "siglip", "siglip2", "vision-text-dual-encoder", "chinese_clip", "altclip")

    def __init__(self, model, tokenizer, image_processor, device=None, name="", pretrained="", max_length=None):
        self.device = torch.device(device or default_device())
        self.model = model.to(self.device).eval()
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.name, self.pretrained = name, pretrained
        self.max_length = max_length
        self.padding = "max_length" if getattr(model.config, "model_type", "").startswith("siglip") else True

    @classmethod
    def from_dir(cls, path: str | Path, device=None) -> HFClipAdapter:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        path = Path(path)
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        except ValueError as e:  # e.g. a config.json that needs remote code (a custom model_type)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "trust_remote_code" in str(e) or "custom code" in str(e):
                raise UnsafeFileError(
                    f"{path}: refused: this model needs code from its own folder or repo (trust_remote_code), "
                    "and mmcl never runs remote code; supported model types: " + ", ".join(cls.SUPPORTED)
                ) from None
            raise ConfigError(f"{path}: not a readable Hugging Face model folder ({first[:200]})") from None
        if config.model_type not in cls.SUPPORTED:
            raise ConfigError(
                f"{path}: model_type {config.model_type!r} is not a CLIP-style dual encoder; "
                f"supported: {', '.join(cls.SUPPORTED)}"
            )
        if not (path / "preprocessor_config.json").is_file():
            raise ConfigError(f"{path}: no preprocessor_config.json (save the image processor with the model)")
        model = AutoModel.from_pretrained(path, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
        text_cfg = getattr(config, "text_config", None)
        max_length = getattr(text_cfg, "max_position_embeddings", None)
        return cls(model, tokenizer, processor, device, name=path.name, pretrained=str(path), max_length=max_length)

    def preprocess(self, image) -> torch.Tensor:
        return self.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def _encode_image(self, images):
        return _features(self.model.get_image_features(pixel_values=images))

    def _encode_text(self, texts):
        batch = self.tokenizer(
            texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**batch))


RECIPE_SUFFIXES = (".yaml", ".yml")


def is_recipe_file(model: str) -> bool:
    """A recipe YAML given as the model: evaluate the model it describes, untrained."""
    return Path(model).suffix in RECIPE_SUFFIXES and Path(model).is_file()


def detect_model_type(model: str) -> str:
    from ..models.pretrained import _is_pretrained_dir

    path = Path(model)
    if is_recipe_file(model) or (path / "recipe.yaml").is_file() or _is_pretrained_dir(path):
        return "mmcl"
    if (path / "config.json").is_file():
        return "hf"
    return "open_clip"


def load_adapter(
    model: str,
    pretrained: str | None = None,
    model_type: str = "auto",
    model_config: str | None = None,
    device=None,
):
    """An adapter for ``model``: an mmcl run folder, an mmcl pretrained folder, a recipe YAML (its
    model before training: :meth:`MmclAdapter.from_recipe`), an HF model folder, or an open_clip name.

    ``pretrained`` is a checkpoint folder for mmcl runs, and a weights file for open_clip.
    """
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of: {', '.join(MODEL_TYPES)}")
    kind = detect_model_type(model) if model_type == "auto" and model_config is None else model_type
    if model_config is not None and model_type == "auto":
        kind = "open_clip"
    if kind == "mmcl":
        from ..models.pretrained import _is_pretrained_dir

        if is_recipe_file(model):
            if pretrained is not None:
                raise ConfigError(
                    f"--pretrained names a checkpoint of a run folder; {model} is a recipe, evaluated at its "
                    "initial weights (train it, then pass the run folder)"
                )
            return MmclAdapter.from_recipe(model, device)

        if _is_pretrained_dir(Path(model)):
            if pretrained is not None:
                raise ConfigError(
                    "--pretrained names a checkpoint of a run folder; a pretrained folder holds one model"
                )
            return MmclAdapter.from_pretrained(model, device)
        if not (Path(model) / "recipe.yaml").is_file():
            raise ConfigError(f"{model}: not an mmcl run folder (no recipe.yaml) nor a pretrained folder")
        return MmclAdapter.from_run(model, pretrained, device)
    if kind == "hf":
        if pretrained is not None:
            raise ConfigError("--pretrained is for mmcl checkpoints and open_clip weights; an HF folder holds its own")
        return HFClipAdapter.from_dir(model, device)
    if Path(model).is_dir() and not (Path(model) / "open_clip_config.json").is_file():
        found = ", ".join(sorted(p.name for p in Path(model).iterdir())[:10])
        raise ConfigError(
            f"{model}: a folder, but neither an mmcl run (recipe.yaml), an HF model (config.json) "
            f"nor an open_clip folder (open_clip_config.json); it holds: {found}"
        )
    name = f"local-dir:{model}" if Path(model).is_dir() else model
    return OpenClipAdapter.from_name(name, pretrained, model_config, device)


def describe(adapter) -> dict:
    """The model fields of a CLIP_benchmark result record."""
    return {"model": adapter.name, "pretrained": str(adapter.pretrained)}
