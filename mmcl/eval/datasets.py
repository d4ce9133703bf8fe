"""Evaluation datasets: the readers moved to :mod:`mmcl.data.evalsets`, opening to the data-source
registry (:func:`mmcl.data.sources.open_dataset`), class names and templates to
:mod:`mmcl.eval.classnames`. Kept so imports of this module keep working."""

from ..data.evalsets import *  # noqa: F403
from ..data.evalsets import EvalDataset  # noqa: F401
from ..data.sources import detect_source, open_dataset  # noqa: F401
from .classnames import resolve_list  # noqa: F401


def detect_kind(path: str) -> str:
    """The data source that claims ``path`` (:func:`mmcl.data.sources.detect_source`)."""
    return detect_source(str(path), "dataset")
