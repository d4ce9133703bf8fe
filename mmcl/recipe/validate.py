"""Checks of a recipe's values that its types cannot express (ranges, paths, combinations of
keys within a section). They need no registry and no heavy library; whether the loss, the model,
the data source and the evaluation tasks fit together is checked by the layers that define them
(:func:`mmcl.check_recipe`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .paths import resolve_path
from .schema import EvalDatasetConfig, Recipe, TextConfig, VisionConfig


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_exists(specs, key: str) -> None:
    """Every named path exists (brace patterns: their first shard)."""
    from braceexpand import braceexpand

    for spec in specs if isinstance(specs, list) else [specs]:
        first = next(iter(braceexpand(spec)), spec)
        _check(Path(first).exists(), f"{key}: not found: {first}" + (f" (from {spec})" if first != spec else ""))


def validate(recipe: Recipe, model_only: bool = False) -> None:
    """Check the values of ``recipe`` (raises :class:`ConfigError` naming the key).

    Args:
        model_only: check only the model section (loading a trained model needs no loss, data or
            optimiser: a run trained with a plugin loss loads without the plugin).
    """
    _validate_model(recipe)
    if model_only:
        return
    _validate_name(recipe.name)
    _validate_data(recipe)
    _validate_train(recipe)
    _validate_eval(recipe)
    _validate_finetune(recipe)
    if recipe.model.kind == "image_image":
        _validate_image_image(recipe)


def _validate_image_image(recipe: Recipe) -> None:
    """What image-image training (``model.kind: image_image``) asks of the data section."""
    d = recipe.data
    _check(d.negatives_key is None, "data.negatives_key holds hard-negative captions: image-text training only")
    _check(
        d.image2_key is not None or d.augment.enabled,
        "image_image training without data.image2_key contrasts two augmented views of each image: set "
        "data.augment.enabled: true (preset: simclr), or name the paired image column in data.image2_key",
    )


def _validate_finetune(recipe: Recipe) -> None:
    """model.freeze/unfreeze, train.layer_decay, model.vision.cache_locked (docs/finetune.md)."""
    import re

    m, d = recipe.model, recipe.train.layer_decay
    for key in ("freeze", "unfreeze"):
        for i, pattern in enumerate(getattr(m, key)):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"model.{key}[{i}]: {pattern!r} is not a regular expression ({e})") from None
    for tower, value in (d if isinstance(d, dict) else {"": d} if d is not None else {}).items():
        key = f"train.layer_decay.{tower}" if tower else "train.layer_decay"
        _check(tower in ("", "vision", "text"), f"{key}: not a tower; valid choices: vision, text")
        _check(isinstance(value, (int, float)) and 0 < value <= 1, f"{key} must be in (0, 1], got {value!r}")
    if m.vision.cache_locked:
        _check(m.kind == "image_text", "model.vision.cache_locked caches a locked image tower of model.kind image_text")
        _check(
            not recipe.data.augment.enabled,
            "model.vision.cache_locked reuses each image's tower output, so the image must not change between "
            "epochs: set data.augment.enabled: false",
        )


def _validate_name(name: str) -> None:
    """The run name becomes a folder under ``train.output_dir``: one plain path component."""
    _check(
        bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0"),
        f"name: {name!r} is not a valid run name: it names the run folder (train.output_dir runs/{{name}}), so it "
        "must be non-empty, without '/', '\\' or NUL, and not '.' or '..'",
    )


def _validate_data(recipe: Recipe) -> None:
    d = recipe.data
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
        _check_exists(d.train, "data.train")
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
    _check(t.sharding in ("none", "fsdp"), f"train.sharding must be none or fsdp, got {t.sharding!r}")
    if t.sharding == "fsdp":
        refused = [
            (recipe.model.kind == "image_image", "model.kind: image_image (image-text models only)"),
            (t.ema_decay is not None, "train.ema_decay (the EMA would be a whole copy on every process)"),
            (t.compile, "train.compile (not tested with sharding yet)"),
            (t.precision == "fp16", "train.precision: fp16 (use bf16; fp16 needs a sharded gradient scaler)"),
            (not recipe.data.negatives_grad, "data.negatives_grad: false (a text pass outside the sharded model)"),
        ]
        for bad, what in refused:
            _check(not bad, f"train.sharding: fsdp does not support {what}; use train.sharding: none for it")
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
        will_exist = synth_root is not None and Path(ds.path).resolve().is_relative_to(synth_root)
        validate_eval_dataset(ds, f"eval.datasets[{i}]", will_exist)


def validate_eval_dataset(ds: EvalDatasetConfig, key: str, will_exist: bool = False) -> None:
    """The values of one evaluation dataset entry (a recipe's, or the one ``mmcl eval TASK`` builds).

    Args:
        will_exist: its files are generated before evaluation (a synthetic corpus): not looked for.
    """
    _check(bool(ds.path), f"{key}.path is required")
    _check(bool(ds.tasks), f"{key}.tasks is empty; list the tasks to run (see mmcl.list_tasks())")
    for attr in ("path", "train_path", "val_path"):  # any format: a file, a folder or a shard pattern
        value = getattr(ds, attr)
        if value is not None and not will_exist and not ds.download:  # download: a benchmark fetches it
            _check_exists(value, f"{key}.{attr}")
    for attr in ("classnames", "templates", "compositional"):
        value = getattr(ds, attr)
        # classnames / templates may also name a shipped list (cifar10): the zeroshot task checks those
        shipped = attr != "compositional" and not Path(value or "").suffix and "/" not in (value or "")
        if value is not None and not will_exist and not shipped:
            _check(Path(value).is_file(), f"{key}.{attr}: file not found: {value}")
    _check(
        bool(ds.recall_k) and all(k >= 1 for k in ds.recall_k),
        f"{key}.recall_k must be a non-empty list of integers >= 1, got {ds.recall_k}",
    )
    _check(ds.k_shot is None or ds.k_shot >= 1, f"{key}.k_shot must be >= 1 (or null), got {ds.k_shot}")
    _check(
        ds.weight_decays is None or (bool(ds.weight_decays) and all(w >= 0 for w in ds.weight_decays)),
        f"{key}.weight_decays must be a non-empty list of numbers >= 0 (or null), got {ds.weight_decays}",
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
    _check(ds.knn_k >= 1 and ds.knn_temperature > 0, f"{key}: knn_k must be >= 1 and knn_temperature > 0")


def _validate_model(recipe: Recipe) -> None:
    m = recipe.model
    _check(m.embed_dim > 0, f"model.embed_dim must be > 0, got {m.embed_dim}")
    _check(
        m.logit_scale_init > 0 and m.logit_scale_max >= m.logit_scale_init,
        "model.logit_scale_init must be > 0 and <= model.logit_scale_max",
    )
    _check_vision(m.vision)
    if m.momentum is not None:
        _check(0 <= m.momentum < 1, f"model.momentum must be in [0, 1), got {m.momentum}")
    if m.kind == "image_text":
        _check(m.vision2 is None, "model.vision2 is a second image tower: it needs model.kind: image_image")
        _check(m.momentum is None, "model.momentum (a MoCo key encoder) needs model.kind: image_image")
        _check(not m.dense, "model.dense (a DenseCL dense head) needs model.kind: image_image")
        _check_text(m.text, whole_model=m.name is not None or m.path is not None)
    elif m.vision2 is not None:
        _check_vision(m.vision2, "model.vision2")
    if m.adapter is not None:
        _check_adapter(m)


def _check_adapter(m) -> None:
    """``model.adapter``: values only; which layers exist is checked when the model is built."""
    a, towers = m.adapter, ("vision", "vision2") if m.kind == "image_image" else ("vision", "text")
    _check(a.r >= 1, f"model.adapter.r must be >= 1, got {a.r}")
    _check(m.momentum is None, "model.adapter with model.momentum (a MoCo key encoder) is not supported; use one")
    _check(a.alpha > 0, f"model.adapter.alpha must be > 0, got {a.alpha}")
    _check(0 <= a.dropout < 1, f"model.adapter.dropout must be in [0, 1), got {a.dropout}")
    _check(
        any(a.target_modules.values()),
        f"model.adapter.target_modules names no layer; give a list per tower ({', '.join(towers)}), "
        "e.g. {vision: [qkv], text: [query, value]}",
    )
    for tower, names in a.target_modules.items():
        _check(
            tower in towers,
            f"model.adapter.target_modules: {tower!r} is not a tower; valid choices: {', '.join(towers)}",
        )
        _check(
            isinstance(names, list) and all(isinstance(n, str) and n for n in names),
            f"model.adapter.target_modules.{tower} must be a list of layer names, got {names!r}",
        )


def _check_vision(v: VisionConfig, key: str = "model.vision") -> None:
    if v.weights is not None:
        _check(Path(resolve_path(v.weights)).is_file(), f"{key}.weights: file not found: {v.weights}")
    _check(0 <= v.patch_dropout < 1, f"{key}.patch_dropout must be in [0, 1), got {v.patch_dropout}")
    _check(v.unlocked_groups >= 0, f"{key}.unlocked_groups must be >= 0, got {v.unlocked_groups}")
    _check(v.image_size is None or v.image_size >= 8, f"{key}.image_size must be >= 8 or null, got {v.image_size}")


def _check_text(t: TextConfig, whole_model: bool = False) -> None:
    """``whole_model``: the model section names a whole pretrained CLIP (``model.name`` or
    ``model.path``), whose text tower comes with it: only the text section's values are checked."""
    _check(t.unlocked_layers >= 0, f"model.text.unlocked_layers must be >= 0, got {t.unlocked_layers}")
    _check(t.max_length >= 4, f"model.text.max_length must be >= 4, got {t.max_length}")
    if whole_model:
        if t.tokenizer is not None:
            found = Path(resolve_path(t.tokenizer)).is_dir()
            _check(found, f"model.text.tokenizer: directory not found: {t.tokenizer}")
        return
    _check(
        (t.path is None) != (t.config is None),
        "model.text: give exactly one of 'path' (a local pretrained model directory) or 'config' "
        "(an inline Hugging Face config for random init)",
    )
    if t.path is not None:
        _check(Path(resolve_path(t.path)).is_dir(), f"model.text.path: directory not found: {t.path}")
    if t.config is not None:
        _check(
            isinstance(t.config.get("model_type"), str),
            "model.text.config needs a model_type (a transformers model type, e.g. bert)",
        )
        _check(
            t.tokenizer is not None,
            "model.text.tokenizer is required with an inline config (a local tokenizer directory)",
        )
    tok = t.tokenizer or t.path
    if tok is not None:
        _check(Path(resolve_path(tok)).is_dir(), f"model.text.tokenizer: directory not found: {tok}")
    _check(t.max_length >= 4, f"model.text.max_length must be >= 4, got {t.max_length}")
