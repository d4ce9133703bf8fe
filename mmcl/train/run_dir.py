"""Writing what a run folder holds besides checkpoints (its layout, and reading it back:
:mod:`mmcl.models.run_folder`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..recipe import Recipe, recipe_to_dict
from .checkpoint import output_errors


def save_run_metadata(run_dir: Path, recipe: Recipe, text_config, tokenizer) -> None:
    """Write the resolved recipe, and the text tower's config and tokenizer, into ``run_dir``.

    Raises:
        OutputError: the folder cannot be written (a full disk, a read-only file system).
    """
    with output_errors(run_dir, "the recipe and tokenizer of the run"):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        if text_config is not None:  # image-image models have no text tower
            text_config.to_json_file(run_dir / "text_config.json")
            tokenizer.save_pretrained(run_dir / "tokenizer")
