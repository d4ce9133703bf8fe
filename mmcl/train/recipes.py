"""Checking a whole recipe before any work starts, and :func:`load_recipe` (read + check).

Each layer checks its own section against its registries: the data source and sampler
(:mod:`mmcl.data`), the model backend (:mod:`mmcl.models.backends`), the loss, which declares what
it needs (:mod:`mmcl.losses.checks`), the evaluation tasks (:mod:`mmcl.eval.checks`); this module
adds what only training asks. The recipe layer (:mod:`mmcl.recipe`) has checked types and values.
"""

from __future__ import annotations

import os

from ..data.samplers import check_sampler
from ..data.sources import check_source
from ..errors import ConfigError
from ..eval.checks import check_eval
from ..losses.checks import check_loss
from ..models.backends import check_model
from ..recipe import Recipe, read_recipe
from .tracking import check_trackers


def check_recipe(recipe: Recipe) -> Recipe:
    """Check that the parts of ``recipe`` fit together (raises :class:`ConfigError` naming the key
    and the valid choices). Cheap; :class:`~mmcl.train.Trainer` calls it too. Returns ``recipe``."""
    d, t = recipe.data, recipe.train
    check_source(d.source)
    check_sampler(d, recipe.model.kind)
    check_model(recipe.model)
    check_loss(recipe)
    check_eval(recipe)
    check_trackers(t.trackers)
    if d.negatives_key is not None and t.accumulation_steps != 1:
        raise ConfigError("data.negatives_key does not support train.accumulation_steps > 1 yet; valid value: 1")
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply ``key=value`` overrides, and check everything.

    Raises:
        ConfigError: unknown key, wrong type, invalid choice, missing file, a value out of range, or
            parts that do not fit together (e.g. a loss that needs a logit bias the model lacks).
    """
    return check_recipe(read_recipe(path, overrides))
