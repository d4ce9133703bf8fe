"""Compositional evaluation: the accuracy rule, the file loader and the shapes generator."""

from __future__ import annotations

import json

import pytest
import torch

from mmcl.errors import ConfigError
from mmcl.eval.compositional import compositional_accuracy, read_items, shapes_compositional_items


def test_accuracy_by_hand():
    img = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0]])
    cap = torch.tensor([[1.0, 0], [0.6, 0.8], [0.6, 0.8]])
    # item 0: 1.0 vs {0.0, 0.8} right; item 1: 0.8 vs 0.8 a tie, wrong; item 2: 0.6 vs 0.9 wrong
    neg = torch.tensor([[0, 1.0], [0.8, 0.6], [0.6, 0.8], [0.9, 0.1]])
    owner = torch.tensor([0, 0, 1, 2])
    m = compositional_accuracy(img, cap, neg, owner, ["a", "b", "b"])
    assert m["acc"] == pytest.approx(1 / 3) and m["acc/a"] == 1.0 and m["acc/b"] == 0.0 and m["num_items"] == 3


def test_shapes_generator_changes_exactly_one_thing(tiny_corpus, tmp_path):
    out = tmp_path / "sub" / "comp.jsonl"
    counts = shapes_compositional_items(tiny_corpus / "test.csv", out)
    items = read_items(out)
    assert sum(counts.values()) == len(items) and set(counts) == {
        "replace_colour",
        "replace_shape",
        "swap_colours",
        "swap_relation",
    }
    for it in items:
        (neg,) = it["negatives"]
        assert neg != it["caption"]
        assert (tmp_path / "sub" / it["image"]).resolve().is_file()  # paths relative to the output file
        a, b = it["caption"].replace(",", "").split(), neg.replace(",", "").split()
        if it["type"] in ("replace_colour", "replace_shape"):
            assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
        elif it["type"] == "swap_colours":
            assert sorted(a) == sorted(b) and sum(x != y for x, y in zip(a, b)) == 2
        else:
            assert any(r in it["caption"] for r in ("left of", "right of", "above", "below"))
    # the same generator, written as CSV, reads back to the same items
    shapes_compositional_items(tiny_corpus / "test.csv", tmp_path / "sub" / "comp.csv")
    assert read_items(tmp_path / "sub" / "comp.csv") == items


def test_loader_accepts_user_json_and_names_missing_columns(tmp_path):
    f = tmp_path / "items.json"
    f.write_text(json.dumps([{"image": "a.png", "positive": "a dog", "negative_1": "a cat", "negative_2": "a cow"}]))
    assert read_items(f) == [{"image": "a.png", "caption": "a dog", "negatives": ["a cat", "a cow"], "type": "all"}]
    f.write_text(json.dumps([{"image": "a.png", "caption": "a dog"}]))
    with pytest.raises(ConfigError, match="no negatives column.*available: image, caption"):
        read_items(f)
    f.write_text(json.dumps([{"img": "a.png", "caption": "a dog", "negatives": ["x"]}]))
    with pytest.raises(ConfigError, match="needs one of the columns filepath, image"):
        read_items(f)


def test_shapes_generator_refuses_crowded_scenes(tmp_path):
    from mmcl.data.synthetic import make_corpus
    from mmcl.recipe import SyntheticConfig

    cfg = SyntheticConfig(
        root=str(tmp_path / "c"), n_train=3, n_test=6, n_novel=1, image_size=16, single_fraction=0.0, max_objects=9
    )
    make_corpus(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"describes a scene of [3-9] objects; compositional items are made for"):
        shapes_compositional_items(tmp_path / "c" / "test.csv", tmp_path / "comp.jsonl")
