"""Benchmarks by name: ``mmcl eval zeroshot --dataset cifar10 --data-root DIR``.

A benchmark is a builder registered under CLIP_benchmark's name of the dataset that reads the
dataset's own layout under a data root (torchvision's layout where torchvision has the dataset,
the official archive's otherwise), with CLIP_benchmark's split. It returns the evaluation dataset
every data source returns (:class:`~mmcl.data.evalsets.EvalDataset`: images with labels or
captions; class names where the data carries them) and names the shipped class-name and template
lists the evaluation layer resolves (``info["classnames"]``, ``info["templates"]``, in the
requested language); a compositional benchmark returns a
:class:`~mmcl.data.benchmarks.compositional.CompositionalSet` instead.

    @register_benchmark("cifar10", task="zeroshot", layout="cifar-10-batches-py/ (torchvision's CIFAR-10)",
                        splits=("test", "train"), classnames="cifar10", templates="cifar10")
    def cifar10(root: Path, req: Request) -> EvalDataset: ...

``wds_<name>`` (or ``wds/<name>``) reads CLIP_benchmark's WebDataset export of any dataset
(``<split>/nshards.txt``, ``<split>/{0..n-1}.tar``, ``classnames.txt``, ...), the form DataComp and
CLIP_benchmark distribute their test sets in.

Files that are not there give one line: the benchmark, what is missing and the layout expected.
``download=True`` fetches missing files where that is possible (torchvision's downloaders, or the
official archive's address); it is never done unless asked, nor when the files are all there.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from ...registry import Registry

# the task a benchmark is made for; zeroshot benchmarks also serve knn and linear_probe
TASK_KINDS = ("zeroshot", "retrieval", "compositional")
WDS_PREFIXES = ("wds_", "wds/")
# CLIP_benchmark names some languages by its own codes; mmcl records ISO 639-1 codes
LANGUAGE_ALIASES = {"cn": "zh", "jp": "ja"}


def normalize_language(code: str | None) -> str:
    """The ISO 639-1 code of ``code`` in lower case (CLIP_benchmark's ``cn`` and ``jp`` are ``zh``
    and ``ja``); None is English."""
    code = (code or "en").strip().lower().replace("_", "-")
    return LANGUAGE_ALIASES.get(code, code)


@dataclass(frozen=True)
class Request:
    """What the caller asks of a builder."""

    split: str = "test"
    language: str = "en"
    max_items: int | None = None
    labels: bool = True  # False: every label -1 (retrieval-only reading)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its builder and what it declares.

    Attributes:
        name: CLIP_benchmark's name (``cifar10``, ``mscoco_captions``, ``imagenet-a``, ...).
        task: ``zeroshot`` (classification; knn and linear_probe read it too), ``retrieval`` or
            ``compositional``.
        layout: one line: what the data root holds (named in the missing-file error).
        build: ``(root, Request) -> EvalDataset | CompositionalSet``.
        splits: the splits it reads; the first is the default (CLIP_benchmark's test split).
        classnames, templates: the shipped lists (``mmcl/eval/assets``) the evaluation uses when
            the data carries none; None: the data's own (class names) or ImageNet's (templates).
        languages: caption languages (retrieval); zero-shot languages come from the shipped lists.
        download: ``(root, Request) -> None`` fetching the files; None: no automatic download.
        source: where to get the files (named in the error when they are missing).
    """

    name: str
    task: str
    layout: str
    build: Callable
    splits: tuple[str, ...] = ("test",)
    classnames: str | None = None
    templates: str | None = None
    languages: tuple[str, ...] = ("en",)
    download: Callable | None = None
    source: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
_ALIASES: dict[str, str] = {}


class Missing(Exception):
    """Raised by a builder for files that are not there; :func:`build_benchmark` turns it into
    one line naming the benchmark's layout."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def need(root: Path, *paths: str) -> None:
    """Raise :class:`Missing` naming the first of ``paths`` (relative to ``root``) that is absent."""
    for p in paths:
        if not (root / p).exists():
            raise Missing(str(root / p))


def register_benchmark(name: str, **declared):
    """Decorator of a builder ``(root: Path, req: Request)``: registers a :class:`Benchmark`."""

    def decorator(build: Callable) -> Callable:
        bench = Benchmark(name=name, build=build, **declared)
        if bench.task not in TASK_KINDS:
            raise ValueError(f"benchmark {name!r}: task {bench.task!r} is not one of {TASK_KINDS}")
        BENCHMARKS.register(name)(lambda: bench)
        for alias in bench.aliases:
            _ALIASES[alias] = name
        return build

    return decorator


def list_benchmarks(pattern: str = "*") -> list[str]:
    """Registered benchmark names (``mmcl eval TASK --dataset NAME --data-root DIR``); ``wds_*``
    stands for CLIP_benchmark's WebDataset export of any dataset."""
    names = BENCHMARKS.list() + ["wds_*"]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def canonical(name: str) -> str:
    """The registered name of ``name`` (an alias such as ``imagenet-sketch``), unchanged otherwise."""
    return _ALIASES.get(name, name)


def is_benchmark(name: str | None) -> bool:
    """Whether ``name`` names a benchmark (a registered name, an alias or ``wds_<name>``)."""
    if not name:
        return False
    return canonical(name) in BENCHMARKS or (name.startswith(WDS_PREFIXES) and len(name) > 4)


def get_benchmark(name: str, key: str = "dataset") -> Benchmark:
    """The :class:`Benchmark` ``name`` names; a :class:`ConfigError` listing the valid names otherwise."""
    if name.startswith(WDS_PREFIXES) and len(name) > 4:
        from .wds import wds_benchmark

        return wds_benchmark(name)
    if canonical(name) not in BENCHMARKS:
        raise ConfigError(f"{key}: {name!r} is not a benchmark; valid choices: {', '.join(list_benchmarks())}")
    return BENCHMARKS.get(canonical(name))()


SERVES = {
    "zeroshot": ("zeroshot", "knn", "linear_probe"),
    "retrieval": ("retrieval",),
    "compositional": ("compositional",),
}


def tasks_of(bench: Benchmark) -> tuple[str, ...]:
    """The evaluation tasks that read ``bench`` (a WebDataset export: classification or retrieval,
    as its ``dataset_type.txt`` says)."""
    if bench.name.startswith(WDS_PREFIXES):
        return ("zeroshot", "retrieval", "knn", "linear_probe")
    return SERVES[bench.task]


def _hint(bench: Benchmark) -> str:
    if bench.download is not None:
        return " (--download fetches it)"
    return f" (get it from {bench.source})" if bench.source else ""


def missing_files(bench: Benchmark, root, what: str) -> ConfigError:
    """The one-line error for ``what`` not being under ``root``: it names the layout expected there."""
    return ConfigError(f"{bench.name}: {what} not found; expected under {root}: {bench.layout}{_hint(bench)}")


def _build(bench: Benchmark, root: Path, req: Request, download: bool):
    """Read ``bench`` from ``root``; ``download``: fetch its files first when some are missing (and
    only then: a complete copy is read as it is)."""
    try:
        return bench.build(root, req)
    except Missing as e:
        if not download:
            raise missing_files(bench, root, e.what) from None
    if bench.download is None:
        raise ConfigError(f"{bench.name}: no automatic download; get it from {bench.source or 'its authors'}")
    root.mkdir(parents=True, exist_ok=True)
    bench.download(root, req)
    try:
        return bench.build(root, req)
    except Missing as e:
        raise missing_files(bench, root, e.what) from None


def build_benchmark(
    name: str,
    root,
    split: str | None = None,
    language: str = "en",
    download: bool = False,
    max_items: int | None = None,
    labels: bool = True,
):
    """Build benchmark ``name`` from ``root`` (its own layout); see the module docstring.

    Raises :class:`ConfigError` with one line for an unknown name, split or language, and for
    files that are not there (naming the layout expected)."""
    bench = get_benchmark(name)
    split = split or bench.splits[0]
    language = normalize_language(language)
    if split not in bench.splits:
        raise ConfigError(f"{bench.name}: no split {split!r}; valid choices: {', '.join(bench.splits)}")
    if bench.task != "zeroshot" and language not in bench.languages:
        raise ConfigError(
            f"{bench.name}: no captions in language {language!r}; its languages: {', '.join(bench.languages)}"
        )
    root = Path(root).expanduser()
    data = _build(bench, root, Request(split, language, max_items, labels), download)
    data.name = bench.name
    data.info.setdefault("benchmark", bench.name)
    data.info.update(split=split, language=language)
    if getattr(data, "classnames", None) is None and bench.classnames:
        data.info.setdefault("classnames", bench.classnames)
    if bench.templates:
        data.info.setdefault("templates", bench.templates)
    return data


# the built-in benchmarks register themselves
from . import captions, classification, compositional, imagenet  # noqa: E402, F401

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Missing",
    "Request",
    "build_benchmark",
    "canonical",
    "get_benchmark",
    "is_benchmark",
    "list_benchmarks",
    "missing_files",
    "need",
    "normalize_language",
    "register_benchmark",
    "tasks_of",
]
