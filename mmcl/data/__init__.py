"""Data sources, transforms, tokenisation and batching."""

from .collate import ImageTextCollate
from .csv_jsonl import SKIP_REASONS, PairedImageTextDataset, read_table
from .sampler import ResumableBatchSampler
from .tokenize import Tokenize, load_tokenizer
from .transforms import image_transforms

__all__ = [
    "SKIP_REASONS",
    "ImageTextCollate",
    "PairedImageTextDataset",
    "ResumableBatchSampler",
    "Tokenize",
    "image_transforms",
    "load_tokenizer",
    "read_table",
]
