"""Writing what a run folder holds besides checkpoints (its layout, and reading it back:
:mod:`mmcl.models.run_folder`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..models.backends import get_backend
from ..recipe import Recipe, recipe_to_dict
from .checkpoint import output_errors


def save_run_metadata(run_dir: Path, recipe: Recipe, text_config, tokenizer, model=None, tokenize=None) -> None:
    """Write the resolved recipe, and the text tower's config and tokenizer, into ``run_dir`` (for a
    library's whole model: what its backend needs to rebuild it offline).

    Raises:
        OutputError: the folder cannot be written (a full disk, a read-only file system).
    """
    with output_errors(run_dir, "the recipe and tokenizer of the run"):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        backend = get_backend(recipe.model)
        if backend.wraps_library:
            backend.save_metadata(model, tokenize, run_dir)
        elif text_config is not None:  # image-image models have no text tower
            text_config.to_json_file(run_dir / "text_config.json")
            tokenizer.save_pretrained(run_dir / "tokenizer")


# what mmcl writes in a run folder besides recipe.yaml, text_config.json and tokenizer/
RUN_OUTPUTS = ("checkpoints", "eval", "metrics.jsonl", "samples.jsonl", "summary.json", "results.json", "results.md")


def holds_run(run_dir: Path) -> bool:
    """A run trained here already: a checkpoint, or logged metrics."""
    metrics = run_dir / "metrics.jsonl"
    return any((run_dir / "checkpoints").glob("step-*")) or (metrics.is_file() and metrics.stat().st_size > 0)


def claim_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to train a new run on top of an old one, whose metrics and checkpoints would mix with
    it; with ``overwrite``, clear the old run's outputs first (process 0 only).

    Raises:
        ConfigError: the folder holds a run, and neither ``train.resume`` nor ``train.overwrite`` is set.
    """
    if resume is not None or not holds_run(run_dir):
        return
    if not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run (checkpoints or metrics.jsonl): continue it with train.resume=latest, "
            "start over with train.overwrite=true, or write elsewhere (name=... or train.output_dir=...)"
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # process 0 clears it
    with output_errors(run_dir, "the previous run's outputs"):
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for events in run_dir.glob("*/events.out.tfevents.*"):  # TensorBoard's, in RUN_DIR/<name>/
            events.unlink()
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
