"""The recipe schema: one typed dataclass per section, with defaults and a comment on each key.

A recipe has five sections (``data``, ``model``, ``loss``, ``train``, ``eval``) plus a ``name``.
docs/recipes.md describes every key. Names that extension points register (data sources,
samplers, losses, evaluation tasks, trackers) are plain strings here and are checked against
their registries when a recipe is checked as a whole (:func:`mmcl.check_recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


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
    """Training data, read by a registered data source (:mod:`mmcl.data.sources`). Column/key names
    default per source: CSV/JSONL ``filepath``/``title``; WebDataset ``jpg;jpeg;png;webp``/``txt``
    (or ``json:<field>``); Hugging Face ``image``/``caption`` (or the usual alternatives)."""

    # a registered data source (mmcl.list_sources(): csv, jsonl, folder, hf, wds, ...) or auto: told from the path
    source: str = "auto"
    # CSV/TSV/JSONL file, image folder, HF dataset path, or WebDataset shards (pattern, list file,
    # folder of .tar, CLIP_benchmark's layout, or a list of those for several mixed sources)
    train: str | list[str] | None = None
    image_key: str | None = None
    caption_key: str | None = None
    label_key: str | None = None  # an integer label column/member (SupCon, probes); optional
    image2_key: str | None = None  # a second image column/member: paired image modalities
    # hard-negative captions per row (CSV/JSONL; NegCLIP-style training, with a loss that takes
    # them): each image is also scored against one of them (`mmcl data make-compositional --merge` writes them)
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
    split: str = "train"  # HF datasets with several splits; CLIP_benchmark's WebDataset layout
    streaming: bool = False  # HF: stream instead of map-style (resume as documented for streams)
    resampled: bool = False  # WebDataset: draw shards with replacement; needs epoch_size
    epoch_size: int | None = None  # samples per epoch in resampled mode
    weights: list[float] | None = None  # WebDataset, resampled: share of samples from each source
    shuffle_block: int = 256  # streams: samples shuffled within blocks of this many per shard
    batch_size: int = 64  # per process
    num_workers: int = 0
    # map-style sources: "random" (a seeded permutation); "clusters": stretches of each epoch drawn
    # from neighbouring clusters of a loss that clusters samples, so hard negatives share a batch
    # (mmcl.negatives.ClusterBatchSampler; sampler_kwargs: clusters_per_block, block); "caption_edits":
    # each caption beside a training caption one minimal edit away (words reordered, or one word
    # replaced), a compositional hard negative at no extra cost (mmcl.negatives.CaptionEditBatchSampler,
    # CSV/JSONL; sampler_kwargs: fraction, edits)
    sampler: str = "random"  # a registered sampler (mmcl.data.list_samplers())
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
    # a locked tower (every parameter frozen) without augmentation: compute its output once per sample
    # (keyed by the sample id) and reuse it in later epochs; exact (docs/finetune.md#locked-tower-cache)
    cache_locked: bool = False


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
class AdapterConfig:
    # parameter-efficient fine-tuning through the peft library (docs/finetune.md): lora, or dora
    # (weight-decomposed LoRA); only the adapters (and `trainable`) train, the rest is frozen
    method: Literal["lora", "dora"] = "lora"
    r: int = 8  # rank of each low-rank update
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input
    # per tower (vision, text; image_image: vision, vision2): names of the Linear layers to adapt, matched
    # against the end of each module name inside the tower (timm ViT: qkv, proj, fc1, fc2; BERT: query,
    # key, value, dense; open_clip: attn (its in_proj and out_proj), c_fc, c_proj; HF CLIP: q_proj, v_proj, ...)
    target_modules: dict[str, list[str]] = field(default_factory=dict)
    # regular expressions (re.search) over parameter names that keep training too, e.g. logit_scale, _proj
    trainable: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    # image_text: a CLIP-style dual encoder. image_image: vision towers only (mmcl.models.ImageEncoder):
    # two augmented views of one image through one tower (SimCLR, MoCo, SupCon), or two corresponding
    # images (data.image2_key: sketch/photo, RGB/depth, ...) through one shared tower or two (vision2)
    kind: Literal["image_text", "image_image"] = "image_text"
    # what builds the model (mmcl.list_backends()); auto: timm_hf for image_text, timm for image_image
    backend: str = "auto"
    # backends that build a whole pretrained CLIP: open_clip's architecture name (or a model-config
    # JSON, a local-dir: folder, an hf-hub: id) and its weights file; a Hugging Face model folder
    name: str | None = None
    pretrained: str | None = None
    path: str | None = None
    # extra keyword arguments of the backend's constructor (open_clip.create_model, from_pretrained)
    kwargs: dict[str, Any] = field(default_factory=dict)
    vision: VisionConfig = field(default_factory=VisionConfig)
    vision2: VisionConfig | None = None  # image_image: the second image's own tower; None shares `vision`
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    # linear (CLIP), mlp (Linear-GELU-Linear), simclr (Linear-BN-ReLU-Linear-BN, SimCLR's head),
    # mocov2 (Linear-ReLU-Linear, MoCo v2's head)
    head: Literal["linear", "mlp", "simclr", "mocov2"] = "linear"
    # image_image: a momentum (EMA) key encoder with this momentum (MoCo: 0.999; for a loss that scores
    # against its keys)
    momentum: float | None = None
    # image_image: a dense head (1x1-conv MLP at every feature-map location) for a dense loss
    dense: bool = False
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    logit_bias_init: float | None = None  # a learnable logit bias (SigLIP: -10); None: no bias
    # start from these weights: a pretrained folder (save_pretrained / mmcl export pretrained), a run
    # folder or an open_clip export (mmcl.interop); the sections above must describe the same model
    init_from: str | None = None
    # regexes over the model's parameter names (re.fullmatch): matching parameters are frozen (no
    # gradient, not in the optimizer), except those unfreeze matches (docs/finetune.md#freezing-by-pattern)
    freeze: list[str] = field(default_factory=list)
    unfreeze: list[str] = field(default_factory=list)
    adapter: AdapterConfig | None = None  # LoRA / DoRA adapters through peft (None: train the weights)


@dataclass
class LossConfig:
    # a registered loss (mmcl.list_losses()); null: the losses' default (mmcl.losses.DEFAULT_LOSS)
    name: str | None = None
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
    # layer-wise lr decay (BEiT/ELECTRA): lr x decay^(L + 1 - layer id) in each transformer tower; one
    # number for both towers or {vision: d, text: d} (docs/finetune.md#layer-wise-learning-rate-decay)
    layer_decay: float | dict[str, float] | None = None
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
    # none: every process holds the whole model (DDP); fsdp: parameters, gradients and optimizer state
    # sharded over the processes (FSDP2; each tower's blocks are units; docs/scale.md). One process: none
    sharding: Literal["none", "fsdp"] = "none"
    # fsdp: free each block's gathered parameters after its forward and gather them again for backward
    # (least memory); false keeps them from forward to backward (less communication, more memory)
    reshard_after_forward: bool = True
    ema_decay: float | None = None  # keep an EMA of the weights (e.g. 0.999); evaluation then uses it
    max_bad_steps: int = 5  # non-finite loss/gradient steps in a row before the run stops
    peak_flops: float | None = None  # per device, for MFU; default: measured (CPU) or the GPU's spec
    # where metrics go: jsonl (RUN_DIR/metrics.jsonl) and the trackers Accelerate supports by name
    trackers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    # a run folder that already holds a run is refused unless train.resume continues it or this
    # clears it (checkpoints, metrics, results) first
    overwrite: bool = False
    progress: bool = True


@dataclass
class EvalDatasetConfig:
    """One evaluation dataset and the tasks run on it (``eval.datasets[i]``). ``mmcl eval TASK``
    builds the same entry from its arguments, so both run the same task code (:mod:`mmcl.eval.tasks`)."""

    name: str = "eval"
    # any format a registered data source reads (mmcl.list_sources()): CSV/TSV/JSONL, an image
    # folder, a Hugging Face dataset, WebDataset shards or CLIP_benchmark's WebDataset layout
    path: str = ""
    kind: str = "auto"  # the data source of path and train_path; auto: told from the path
    # kind may also name a benchmark (cifar10, mscoco_captions, sugar_crepe, wds_<name>, ...;
    # mmcl.data.benchmarks.list_benchmarks()): path is then its data root, read in its own layout
    split: str = "test"  # data with splits (a Hugging Face dataset dict, CLIP_benchmark's layout)
    # registered evaluation tasks (mmcl.list_tasks()): zeroshot, retrieval, knn, linear_probe, ...
    tasks: list[str] = field(default_factory=lambda: ["zeroshot", "retrieval"])
    # columns (WebDataset: member extensions); null: the source's defaults (CSV/JSONL filepath, image, ...;
    # title, caption, text, ...; label. Hugging Face image, img, ...; caption, text, ...; label, labels, ...
    # WebDataset webp/png/jpg/jpeg; txt; cls)
    image_key: str | None = None
    image2_key: str | None = None  # image_retrieval: the paired image column (image <-> image2 recall@k)
    caption_key: str | None = None
    label_key: str | None = None  # class index; items with label < 0 are skipped by classification tasks
    group_key: str | None = None  # items with equal keys count as matches in attribute-level recall
    separator: str | None = None  # CSV: null is "," ("\t" for a .tsv file)
    image_root: str | None = None  # base folder of relative image paths (default: the file's folder)
    classnames: str | None = None  # zeroshot: a file (one name per line, or JSON); default: the dataset's own
    templates: str | None = None  # zeroshot: prompt templates with "{}"; default: the dataset's own, else ImageNet's
    max_items: int | None = None
    # the language of the captions and prompts (ISO 639-1: en, de, zh, ...): a benchmark's captions
    # (crossmodal3600, multi30k, ...) and the shipped class names and templates; recorded in results
    language: str = "en"
    download: bool = False  # a benchmark (kind): fetch its files into path when they are missing
    # retrieval: the k of recall@k; optimistic_ties also reports recall with ties in the query's favour
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    optimistic_ties: bool = False
    # knn / linear_probe / finetune / dense_probe: a labelled training set (any format, same columns)
    # for the classifier, scored on this dataset's labelled items
    train_path: str | None = None
    train_split: str = "train"
    train_max_items: int | None = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    # linear_probe: a validation set for the weight decay (default: a seeded 20% of the training set),
    # the weight decays to choose from (default: a log grid, refined), k images per class (few-shot)
    val_path: str | None = None
    weight_decays: list[float] | None = None
    k_shot: int | None = None
    probe_seed: int = 0
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
