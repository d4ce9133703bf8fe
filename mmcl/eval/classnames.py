"""Class names and prompt templates: shipped lists for common benchmarks (``assets/``), text files
and JSON lists."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

ASSETS = Path(__file__).parent / "assets"


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _named_lists(file: str, key: str) -> dict[str, list[str]]:
    return json.loads((ASSETS / file).read_text())[key]


def resolve_list(value: str | None, kind: str, fallback: list[str] | None) -> list[str] | None:
    """Class names or templates: a shipped benchmark name, a text file (one per line) or a JSON list;
    None keeps ``fallback`` (the dataset's own)."""
    if value is None:
        return fallback
    p = Path(value)
    if p.is_file():
        return json.loads(p.read_text()) if p.suffix == ".json" else _read_lines(p)
    shipped = _named_lists(f"{kind}.json", kind)
    if value in shipped:
        return shipped[value]
    raise ConfigError(f"{kind} {value!r}: not a file, nor a shipped benchmark; shipped: {', '.join(sorted(shipped))}")
