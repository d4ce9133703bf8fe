"""Recipes: the schema (typed sections), reading YAML files with ``_base_`` and overrides, and
value checks. Nothing here imports torch; see :func:`mmcl.check_recipe` for the checks that ask the
registries (sources, backends, losses, tasks) whether a recipe's parts fit together.
"""

from .load import (
    RecipeLoader,
    apply_overrides,
    expand_env,
    parse_override,
    parse_yaml,
    read_recipe,
    read_recipe_data,
    recipe_from_dict,
    recipe_to_dict,
)
from .paths import resolve_path
from .schema import (
    AdapterConfig,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    EvalDatasetConfig,
    LossConfig,
    ModelConfig,
    Recipe,
    SyntheticConfig,
    TextConfig,
    TrainConfig,
    VisionConfig,
)
from .validate import validate

__all__ = [
    "AdapterConfig",
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "EvalDatasetConfig",
    "LossConfig",
    "ModelConfig",
    "Recipe",
    "RecipeLoader",
    "SyntheticConfig",
    "TextConfig",
    "TrainConfig",
    "VisionConfig",
    "apply_overrides",
    "expand_env",
    "parse_override",
    "parse_yaml",
    "read_recipe",
    "read_recipe_data",
    "recipe_from_dict",
    "recipe_to_dict",
    "resolve_path",
    "validate",
]
