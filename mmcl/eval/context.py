"""The data of one evaluation dataset entry, opened and encoded once for all its tasks."""

from __future__ import annotations

from ..data.evalsets import EvalDataset
from ..data.sources import open_dataset
from ..errors import ConfigError
from ..recipe import EvalDatasetConfig
from .encode import Encoded, encode_dataset
from .tasks import get_task


class EvalData:
    """What the tasks of one ``eval.datasets`` entry (or one ``mmcl eval TASK`` call) read.

    ``open(which)`` opens the ``test`` set (``path``), the ``train`` set (``train_path``) or the
    ``val`` set (``val_path``) through the data-source registry (any format ``mmcl eval`` reads),
    with the entry's ``kind``, split and column keys. The test set is encoded once for every task
    that scores its features (zero-shot, retrieval, kNN, linear probe), with its captions when one
    of the entry's tasks reads them; the training set once for kNN and the linear probe.

    Args:
        cfg: the dataset entry.
        batch_size, num_workers, progress: how to encode.
    """

    def __init__(self, cfg: EvalDatasetConfig, batch_size: int = 64, num_workers: int = 0, progress: bool = True):
        self.cfg, self.batch_size, self.num_workers, self.progress = cfg, batch_size, num_workers, progress
        tasks = [get_task(name) for name in cfg.tasks]
        self.texts = any(t.texts for t in tasks)  # the shared encoding reads captions
        self.labels = any(t.labels for t in tasks)  # ... and labels (else a label column is not even parsed)
        self._opened: dict[str, EvalDataset] = {}
        self._encoded: dict[str, Encoded] = {}

    def path_of(self, which: str) -> str:
        c = self.cfg
        return {"test": c.path, "train": c.train_path, "val": c.val_path}[which]

    def open(self, which: str = "test") -> EvalDataset:
        """The ``test``, ``train`` or ``val`` set, opened once."""
        if which not in self._opened:
            c = self.cfg
            test = which == "test"
            path = self.path_of(which)
            if path is None:
                raise ConfigError(f"{c.name}: no {which} set ({'train_path' if which == 'train' else 'val_path'})")
            self._opened[which] = open_dataset(
                path,
                kind=c.kind,
                split=c.train_split if which == "train" else c.split,
                image_key=c.image_key,
                caption_key=c.caption_key,
                label_key=c.label_key,
                separator=c.separator,
                image_root=c.image_root,
                max_items=c.train_max_items if which == "train" else c.max_items,
                name=c.name if test else f"{c.name}/{which}",
                group_key=c.group_key if test and self.texts else None,
                labels=self.labels or not test,
                language=c.language,
                download=c.download,
            )
        return self._opened[which]

    def encoded(self, adapter, which: str = "test") -> Encoded:
        """Features of the ``which`` set, encoded once. The test set's include its captions when a
        task of the entry reads them, and every image, captioned or not
        (:meth:`~mmcl.eval.encode.Encoded.with_captions` gives retrieval's view)."""
        if which not in self._encoded:
            texts = self.texts and which == "test"
            self._encoded[which] = encode_dataset(
                adapter,
                self.open(which),
                self.batch_size,
                self.num_workers,
                texts=texts,
                progress=self.progress,
                keep_uncaptioned=texts,
            )
        return self._encoded[which]

    def labelled(self, adapter, which: str = "test"):
        """``(features, labels, skipped)`` of the labelled images of the ``which`` set."""
        enc = self.encoded(adapter, which)
        keep = enc.labels >= 0
        if not keep.any():
            raise ConfigError(f"{self.open(which).name}: no labelled images (class subfolders, or a label column)")
        return enc.image_features[keep], enc.labels[keep], enc.skipped
