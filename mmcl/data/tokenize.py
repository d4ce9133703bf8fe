"""Tokenisers come from local directories only."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..recipe import TextConfig, resolve_path


def load_tokenizer(cfg: TextConfig) -> PreTrainedTokenizerBase:
    path = resolve_path(cfg.tokenizer or cfg.path)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


class Tokenize:
    """Callable: list of captions -> {"input_ids", "attention_mask"} padded to the longest."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict:
        out = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
