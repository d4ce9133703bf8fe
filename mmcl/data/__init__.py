"""Data sources, transforms, tokenisation and batching."""

from .collate import ImageTextCollate
from .csv_jsonl import PairedImageTextDataset, read_table
from .pairs import SKIP_REASONS, ItemMaker
from .samplers import ResumableBatchSampler, list_samplers
from .sources import (
    DataSource,
    TrainData,
    build_train_data,
    detect_source,
    list_sources,
    open_dataset,
    register_source,
)
from .tokenize import Tokenize, load_tokenizer
from .transforms import image_transforms

__all__ = [
    "SKIP_REASONS",
    "DataSource",
    "ImageTextCollate",
    "ItemMaker",
    "PairedImageTextDataset",
    "ResumableBatchSampler",
    "Tokenize",
    "TrainData",
    "build_train_data",
    "detect_source",
    "image_transforms",
    "list_samplers",
    "list_sources",
    "load_tokenizer",
    "open_dataset",
    "read_table",
    "register_source",
]
