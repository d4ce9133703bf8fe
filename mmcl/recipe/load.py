"""Reading recipes: YAML (with YAML 1.2 numbers) onto the schema's dataclasses, ``_base_``
inheritance, ``_replace_``, dotted ``key=value`` overrides and ``${VAR}`` environment variables.

Every error is a :class:`~mmcl.errors.ConfigError` naming the key or file (and the valid keys).
Reading needs no heavy library: a recipe's mistakes are reported before torch is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .schema import Recipe
from .validate import validate


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


def build_section(cls: type, data: dict, key: str) -> Any:
    """One recipe section (a schema dataclass) from plain data, types checked; errors name ``key``."""
    return _build(cls, data, key)


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


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, key: str = "") -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in string values, from the environment, so a recipe can
    name data and models outside the repository (``train: ${DATA}/train.csv``). An unset variable
    without a default is an error naming the key. ``$`` alone is left as written."""
    if isinstance(data, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, f"{key}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{key}: environment variable {name} is not set (in {data!r}); set it or write ${{{name}:-default}}"
        )

    return _ENV.sub(value, data)


def recipe_from_dict(data: dict, model_only: bool = False) -> Recipe:
    """A :class:`Recipe` from plain data, its types and values checked (``model_only``: see
    :func:`~mmcl.recipe.validate.validate`). Whether its parts fit together (loss and model, data
    source, evaluation tasks) is :func:`mmcl.check_recipe`'s job."""
    recipe = _build(Recipe, expand_env(data))
    validate(recipe, model_only=model_only)
    return recipe


def read_recipe_data(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """The plain data of a recipe file, ``_base_`` recipes merged and ``key=value`` overrides applied."""
    return apply_overrides(_read_yaml(Path(path)), overrides or [])


def read_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file and apply overrides; types and values are checked.

    Raises:
        ConfigError: unknown key, wrong type, invalid choice, missing file, or a value out of range.
    """
    return recipe_from_dict(read_recipe_data(path, overrides))


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
