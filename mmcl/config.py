"""Compatibility: the recipe API under its old module name (mmcl <= 0.1 had one ``config.py``).

New code imports the schema from :mod:`mmcl.recipe` and checks whole recipes with
:func:`mmcl.check_recipe`. Here, as before, :func:`load_recipe` and :func:`recipe_from_dict`
check everything (values and whether the parts fit together). Nothing inside mmcl imports this
module.
"""

from __future__ import annotations

from .errors import ConfigError
from .recipe import *  # noqa: F403 - the whole schema, as the old module had it
from .recipe import __all__ as _recipe_names
from .recipe import recipe_from_dict as _values_only


def recipe_from_dict(data: dict, model_only: bool = False):
    """A :class:`~mmcl.recipe.Recipe` from plain data, checked in full (``model_only``: the model only)."""
    from .train.recipes import check_recipe

    recipe = _values_only(data, model_only=model_only)
    if not model_only:
        check_recipe(recipe)
    return recipe


def load_recipe(path, overrides=None):
    """Read a recipe file, apply overrides and check everything (= :func:`mmcl.load_recipe`)."""
    from .train.recipes import load_recipe as load

    return load(path, overrides)


__all__ = [*_recipe_names, "ConfigError", "load_recipe", "recipe_from_dict"]  # noqa: PLE0604
