"""Building what a run trains from its recipe: the Accelerator, the model with its tokenizer and
transforms, the data, and the optimizer, schedule and EMA around the model."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..data import Tokenize, load_tokenizer
from ..data.sources import build_train_data
from ..data.transforms import MultiView
from ..errors import ConfigError
from ..models import create_model, text_model_config
from ..models.backends import get_backend
from ..recipe import Recipe, recipe_to_dict, validate
from .optim import create_optimizer, create_scheduler
from .sharding import shard_model, sharding_on, split_param_groups
from .signals import WorkerSignals
from .tower_cache import install_tower_cache
from .tracking import make_trackers


def _launched_with(kind: str) -> bool:
    """Whether ``accelerate launch`` was given a config with ``distributed_type: FSDP`` or ``DEEPSPEED``."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def apply_launch_config(recipe: Recipe) -> None:
    """Route an Accelerate FSDP launch (recipes/accelerate/fsdp.yaml) to mmcl's own sharding and
    refuse a DeepSpeed one. Accelerate's FSDP plugin shards on GPUs only (on CPU it quietly runs
    DDP) and would wrap the model itself, so it is switched off and ``train.sharding`` set to fsdp;
    the recipe's ``train.*`` keys, not the config's ``fsdp_config``, then decide how it shards."""
    if _launched_with("DEEPSPEED"):
        raise ConfigError(
            "mmcl does not support DeepSpeed (docs/scale.md, 'DeepSpeed'); shard with train.sharding: fsdp, "
            "launched with torchrun or recipes/accelerate/fsdp.yaml"
        )
    if not (_launched_with("FSDP") or os.environ.get("MMCL_ACCELERATE_FSDP") == "1"):
        return
    # Accelerate reads this when its state is created, just below; the launch is remembered for a
    # second Trainer in this process (a sweep)
    os.environ.update(ACCELERATE_USE_FSDP="false", MMCL_ACCELERATE_FSDP="1")
    if recipe.train.sharding != "fsdp":
        recipe.train.sharding = "fsdp"
        try:
            validate(recipe)
        except ConfigError as e:
            raise ConfigError(f"launched with Accelerate's FSDP config: {e}") from None


def make_accelerator(recipe: Recipe) -> Accelerator:
    t = recipe.train
    if t.precision == "fp16" and (t.cpu or not torch.cuda.is_available()):
        raise ConfigError(
            "train.precision=fp16 needs a GPU; use fp32 on CPU (bf16 runs on CPU but is slow without AVX512-BF16)"
        )
    apply_launch_config(recipe)
    trackers = make_trackers(t.trackers, recipe.run_dir, recipe.name, recipe_to_dict(recipe))
    # Accelerate keeps one global state per process; a second Trainer in the same process (a
    # notebook, a sweep) may use another precision. The distributed set-up itself is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[t.precision],
        # Accelerate only sets up multi-process CPU training (gloo) when told it runs on CPU.
        cpu=t.cpu or not torch.cuda.is_available(),
        log_with=trackers or None,
        project_dir=str(recipe.run_dir),
    )


def build_model(recipe: Recipe) -> SimpleNamespace:
    """``(model, text_config, tokenizer, tokenize)``; the last three None for an image-image model."""
    m = recipe.model
    backend = get_backend(m)
    if backend.wraps_library:  # a library's whole CLIP: its own tokenizer (open_clip, Hugging Face)
        model = create_model(m)
        tokenize = backend.tokenizer(m, model)
        return SimpleNamespace(model=model, text_config=None, tokenizer=tokenize.tokenizer, tokenize=tokenize)
    if m.kind == "image_image":  # vision towers only: no tokenizer, no captions
        return SimpleNamespace(model=create_model(m), text_config=None, tokenizer=None, tokenize=None)
    text_config = text_model_config(m.text)
    tokenizer = load_tokenizer(m.text)
    model = create_model(m, text_config=None if m.text.path else text_config)
    return SimpleNamespace(
        model=model, text_config=text_config, tokenizer=tokenizer, tokenize=Tokenize(tokenizer, m.text.max_length)
    )


def build_data(recipe: Recipe, model, tokenize, acc: Accelerator):
    """``(training data, eval transform)`` for this process."""
    data, image_image = recipe.data, recipe.model.kind == "image_image"
    # densecl's match: geometry pairs cells by where each view was cropped: views that say so
    located = image_image and recipe.loss.kwargs.get("match") == "geometry"
    train_tf, eval_tf = get_backend(recipe.model).transforms(model, data.augment, located)
    if image_image and data.image2_key is None:
        train_tf = MultiView(train_tf, train_tf)  # two augmented views of each image
    built = build_train_data(
        data,
        train_tf,
        tokenize,
        acc.process_index,
        acc.num_processes,
        seed=recipe.train.seed,
        need_caption=not image_image,
    )
    loader = built.loader
    if isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0:
        loader.worker_init_fn = WorkerSignals(loader.worker_init_fn)
    return built, eval_tf


def prepare_model(recipe: Recipe, model, acc: Accelerator):
    """``(prepared model, optimizer, scheduler, EMA or None)``: memory format, SyncBatchNorm,
    AdamW and its schedule, torch.compile, Accelerate's wrapping, or FSDP2 with ``train.sharding:
    fsdp`` (:mod:`.sharding`)."""
    t = recipe.train
    if t.channels_last:  # every 4-D weight: both towers and a MoCo key encoder's copy
        model.to(memory_format=torch.channels_last)
    if t.sync_bn and acc.num_processes > 1:
        if acc.device.type == "cpu":
            raise ConfigError(
                "train.sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU processes use false "
                "(or a tower and head without BatchNorm, e.g. model.head: mlp)"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    cache = install_tower_cache(recipe, model)  # model.vision.cache_locked (mmcl.train.tower_cache)
    if cache is not None:
        acc.print("  locked-tower cache: the image tower's output is computed once per sample and reused")
    if sharding_on(recipe, acc.num_processes):
        # FSDP2 applied here, not by accelerator.prepare (which would wrap the model in DDP)
        model = shard_model(model, recipe, acc.device, acc.num_processes)
        optimizer = split_param_groups(create_optimizer(model, t, acc.device))
        return model, optimizer, create_scheduler(optimizer, t), None
    if t.sharding == "fsdp":
        acc.print("train.sharding: fsdp with one process: nothing to shard, the model is trained whole")
    optimizer = create_optimizer(model, t, acc.device)
    scheduler = create_scheduler(optimizer, t)
    if t.compile:
        model.compile()  # in place: parameter names and checkpoints are unchanged
    # The scheduler is stepped by hand once per optimizer step (Accelerate's wrapper would step it
    # once per process).
    model, optimizer = acc.prepare(model, optimizer)
    ema = None
    if t.ema_decay is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(acc.unwrap_model(model), decay=t.ema_decay)
    return model, optimizer, scheduler, ema
