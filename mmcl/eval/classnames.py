"""Class names and prompt templates: shipped lists for common benchmarks (``assets/``), text files
and JSON lists, in English and in the languages CLIP_benchmark ships translations for.

``assets/classnames.json`` and ``assets/templates.json`` hold the English lists;
``assets/classnames.<lang>.json`` and ``assets/templates.<lang>.json`` the translated ones
(ISO 639-1 codes: ``ar``, ``it``, ``ja``, ``zh``; CLIP_benchmark's ``cn`` and ``jp`` are accepted).
Each file's ``source`` says where its lists come from."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..data.benchmarks import normalize_language
from ..errors import ConfigError

ASSETS = Path(__file__).parent / "assets"
DEFAULT_TEMPLATES = "imagenet1k"  # CLIP_benchmark's fallback: ImageNet's prompts


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _file(kind: str, language: str) -> Path:
    return ASSETS / (f"{kind}.json" if language == "en" else f"{kind}.{language}.json")


@functools.cache
def _shipped(kind: str, language: str) -> dict[str, list[str]]:
    path = _file(kind, language)
    return json.loads(path.read_text(encoding="utf-8"))[kind] if path.is_file() else {}


def shipped_lists(kind: str, language: str = "en") -> dict[str, list[str]]:
    """The shipped ``classnames`` or ``templates`` lists in ``language``, by benchmark name."""
    return dict(_shipped(kind, normalize_language(language)))


def shipped_languages(kind: str = "classnames") -> list[str]:
    """The languages with shipped ``kind`` lists (``en`` first)."""
    others = sorted(p.name.split(".")[1] for p in ASSETS.glob(f"{kind}.*.json"))
    return ["en", *others]


def _not_shipped(value: str, kind: str, language: str) -> ConfigError:
    where = [lang for lang in shipped_languages(kind) if value in _shipped(kind, lang)]
    if where:
        return ConfigError(
            f"{kind} {value!r}: no {language!r} list shipped (languages: {', '.join(where)}); pass a file of your own"
        )
    listed = ", ".join(sorted(_shipped(kind, language))) or "none"
    lang = "" if language == "en" else f" ({language})"
    return ConfigError(f"{kind} {value!r}: not a file, nor a shipped benchmark; shipped{lang}: {listed}")


def resolve_list(value: str | None, kind: str, fallback: list[str] | None, language: str = "en") -> list[str] | None:
    """Class names or templates: a shipped benchmark name (in ``language``), a text file (one per
    line) or a JSON list; None keeps ``fallback`` (the dataset's own)."""
    if value is None:
        return fallback
    p = Path(value)
    if p.is_file():
        return json.loads(p.read_text()) if p.suffix == ".json" else _read_lines(p)
    language = normalize_language(language)
    shipped = _shipped(kind, language)
    if value in shipped:
        return list(shipped[value])
    raise _not_shipped(value, kind, language)


def _given(value, kind: str, language: str):
    return value if isinstance(value, list) else resolve_list(value, kind, None, language)


def resolve_prompts(data, classnames=None, templates=None, language: str = "en") -> tuple[list[str], list[str]]:
    """The class names and templates zero-shot classification of ``data`` uses, in ``language``.

    Class names: ``classnames`` (a list, a file or a shipped name), else the data's own (folder
    names, ``classnames.txt``, a benchmark's annotation files), else the shipped list the data
    names (``data.info["classnames"]``, a benchmark's; restricted to ``info["class_subset"]``).
    Templates: ``templates``, else the data's own, else the shipped list the data names, else
    ImageNet's prompts in ``language`` (CLIP_benchmark's fallback)."""
    language = normalize_language(language)
    info = getattr(data, "info", {}) or {}
    names = _given(classnames, "classnames", language)
    if names is None and data.classnames is not None:
        names = list(data.classnames)
    if names is None and info.get("classnames"):
        names = resolve_list(info["classnames"], "classnames", None, language)
        if info.get("class_subset") is not None:
            names = [names[i] for i in info["class_subset"]]
    if names is None:
        raise ConfigError(f"{data.name}: no class names; pass --classnames FILE or a benchmark name")
    prompts = _given(templates, "templates", language)
    if prompts is None:
        prompts = data.templates
    if not prompts:
        key = info.get("templates")
        key = key if key in _shipped("templates", language) else DEFAULT_TEMPLATES
        prompts = resolve_list(key, "templates", None, language)
    return names, list(prompts)
