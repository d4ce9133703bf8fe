"""SugarCrepe, ARO and Winoground scored by their own definitions: each scorer against a
hand-computed example, then each benchmark read from its own files and scored end to end with a
model whose similarities can be worked out by hand (colours)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from mmcl.cli import main
from mmcl.data.benchmarks import build_benchmark
from mmcl.data.benchmarks.compositional import order_perturbations, pre_caption
from mmcl.eval.compositional import choice_metrics, evaluate_benchmark, winoground_metrics

from .benchmark_fixtures import WRITERS, ColourModel, image, write


def test_sugar_crepe_scorer_by_hand():
    # SugarCrepe: right when the true caption scores strictly higher than the negative
    scores = [[0.9, 0.1], [0.5, 0.5], [0.2, 0.7], [0.8, 0.3]]
    m = choice_metrics(scores, ["add_att", "add_att", "add_att", "swap_obj"], ties="wrong", macro={"min_count": 1})
    # add_att: right, tie (wrong), wrong -> 1/3; swap_obj: right -> 1
    assert m["acc"] == 0.5 and m["num_items"] == 4
    assert m["acc/add_att"] == pytest.approx(1 / 3) and m["acc/swap_obj"] == 1.0
    assert m["macro_acc"] == pytest.approx((1 / 3 + 1) / 2) and m["num_types"] == 2


def test_aro_scorers_by_hand():
    from mmcl.data.benchmarks.compositional import symmetric_relations

    # VG-Relation: the macro accuracy over relations, without ARO's symmetric ones ("near" is one)
    scores = [[0.9, 0.1], [0.1, 0.9], [0.4, 0.5], [0.7, 0.2], [0.6, 0.3]]
    types = ["on", "on", "on", "near", "under"]
    assert "near" in symmetric_relations() and "on" not in symmetric_relations()
    m = choice_metrics(scores, types, macro={"exclude": symmetric_relations()})
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["macro_acc"] == pytest.approx((1 / 3 + 1) / 2)  # on: 1/3, under: 1; near left out
    # VG-Attribution: only attribute pairs seen at least 25 times count
    scores = [[0.9, 0.1]] * 20 + [[0.1, 0.9]] * 5 + [[0.1, 0.9]] * 3
    types = ["red_wooden"] * 25 + ["big_small"] * 3
    m = choice_metrics(scores, types, macro={"min_count": 25})
    assert m["acc"] == pytest.approx(20 / 28) and m["macro_acc"] == pytest.approx(0.8) and m["num_types"] == 1
    # COCO/Flickr order: the argmax with the true caption first, so a tie counts as right
    scores = [[0.5, 0.5, 0.1, 0.2, 0.3], [0.4, 0.5, 0.1, 0.1, 0.1], [0.9, 0.1, 0.2, 0.3, 0.4]]
    m = choice_metrics(scores, ["all"] * 3, ties="right")
    assert m["acc"] == pytest.approx(2 / 3) and "acc/all" not in m


def test_winoground_scores_by_hand():
    # s[caption][image]; caption c goes with image c
    scores = [
        [[0.9, 0.2], [0.1, 0.8]],  # text right, image right: group right
        [[0.5, 0.6], [0.4, 0.7]],  # text right (0.5 > 0.4, 0.7 > 0.6); image wrong (0.5 < 0.6)
        [[0.3, 0.1], [0.5, 0.2]],  # text wrong (0.3 < 0.5); image wrong (0.2 < 0.5)
        [[0.6, 0.2], [0.7, 0.8]],  # text wrong (0.6 < 0.7); image right (0.6 > 0.2, 0.8 > 0.7)
    ]
    m = winoground_metrics(scores, ["Object", "Relation", "Relation", "Both"])
    assert (m["text_score"], m["image_score"], m["group_score"]) == (0.5, 0.5, 0.25) and m["num_items"] == 4
    assert m["text_score/Relation"] == 0.5 and m["image_score/Both"] == 1.0 and m["group_score/Object"] == 1.0
    # a tie is not a win
    assert winoground_metrics([[[0.5, 0.5], [0.5, 0.5]]])["group_score"] == 0.0


def test_aro_order_shuffles_and_caption_normalisation():
    assert pre_caption("A Dog (running)!  on: the grass.") == "a dog running on the grass"
    assert pre_caption(" ".join(["w"] * 40)).count("w") == 30
    tagged = [("a", "DT"), ("red", "JJ"), ("dog", "NN"), ("and", "CC"), ("a", "DT"), ("blue", "JJ"), ("cat", "NN")]
    tokens = [w for w, _ in tagged]
    out = order_perturbations("a red dog and a blue cat", tagged, tokens, np.random.RandomState(1), random.Random(1))
    assert len(out) == 4
    for shuffled in out:
        assert sorted(shuffled.split()) == sorted(tokens)  # every shuffle keeps the words
    nouns_adjectives, others = out[0].split(), out[1].split()
    assert [nouns_adjectives[i] for i in (0, 3, 4)] == ["a", "and", "a"]  # only nouns and adjectives moved
    assert [others[i] for i in (1, 2, 5, 6)] == ["red", "dog", "blue", "cat"]  # only the other words moved


@pytest.mark.parametrize(
    "name, expected",
    [
        # 7 categories x (red image: "a red cube" vs "a blue cube") right; add_att's blue image wrong
        ("sugar_crepe", {"acc": 7 / 8, "acc/add_att": 0.5, "acc/swap_obj": 1.0, "macro_acc": 6.5 / 7}),
        # the crops: left half red, right half blue; "near" is one of ARO's symmetric relations
        ("vg_relation", {"acc": 2 / 3, "macro_acc": 1.0, "num_types": 2}),
        ("vg_attribution", {"acc": 1.0, "num_types": 0}),
        # every option names red once: all tie, and ARO's order sets count a tie as right
        ("coco_order", {"acc": 1.0}),
        ("flickr30k_order", {"acc": 1.0}),
        ("winoground", {"text_score": 1.0, "image_score": 1.0, "group_score": 1.0, "num_items": 1}),
    ],
)
def test_each_benchmark_end_to_end_by_hand(name, expected, tmp_path):
    WRITERS[name](tmp_path)
    metrics = evaluate_benchmark(ColourModel(), build_benchmark(name, tmp_path), batch_size=4, progress=False)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), (key, metrics)
    if name == "vg_attribution":
        assert math.isnan(metrics["macro_acc"])  # no attribute pair seen 25 times


def test_winoground_types_and_unreadable_images(tmp_path):
    image(tmp_path / "images" / "r.png", "red")
    image(tmp_path / "images" / "b.png", "blue")
    examples = [
        {"caption_0": "red over blue", "caption_1": "blue over red", "image_0": "r", "image_1": "b",
         "collapsed_tag": "Object"},
        # the images swapped: every comparison goes the wrong way
        {"caption_0": "red over blue", "caption_1": "blue over red", "image_0": "b", "image_1": "r",
         "collapsed_tag": "Relation"},
        {"caption_0": "x", "caption_1": "y", "image_0": "missing", "image_1": "r", "collapsed_tag": "Both"},
    ]  # fmt: skip
    write(tmp_path / "examples.jsonl", "".join(json.dumps(e) + "\n" for e in examples))
    m = evaluate_benchmark(ColourModel(), build_benchmark("winoground", tmp_path), progress=False)
    assert m["group_score"] == 0.5 and m["group_score/Object"] == 1.0 and m["group_score/Relation"] == 0.0
    assert m["num_items"] == 2 and m["skipped"] == {"missing_image": 1, "items_without_image": 1}


def test_compositional_benchmark_from_the_cli(tmp_path, monkeypatch):
    import mmcl.eval.adapters as adapters

    monkeypatch.setattr(adapters, "load_adapter", lambda *a, **k: ColourModel())
    WRITERS["sugar_crepe"](tmp_path / "sc")
    out = tmp_path / "r.json"
    args = ["eval", "compositional", "--model", "x", "--dataset", "sugar_crepe", "--data-root", str(tmp_path / "sc")]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == "sugar_crepe" and record["task"] == "compositional"
    assert record["metrics"]["macro_acc"] == pytest.approx(6.5 / 7)


def test_make_compositional_reads_benchmark_files(tmp_path, capsys):
    from mmcl.eval.compositional import evaluate_compositional, read_items

    WRITERS["sugar_crepe"](tmp_path / "sc")
    out = tmp_path / "items" / "sc.jsonl"
    assert main(["data", "make-compositional", "--benchmark", "sugar_crepe", str(tmp_path / "sc"), str(out)]) == 0
    assert "8 items of sugar_crepe (7 types)" in capsys.readouterr().out
    items = read_items(out)
    assert len(items) == 8 and all((out.parent / it["image"]).is_file() for it in items)
    assert evaluate_compositional(ColourModel(), out, progress=False)["acc"] == pytest.approx(7 / 8)
    # ARO's VG crops are written beside the items file, and give the same accuracy as by name
    WRITERS["vg_relation"](tmp_path / "vgr")
    out = tmp_path / "items" / "vgr.csv"
    assert main(["data", "make-compositional", "--benchmark", "vg_relation", str(tmp_path / "vgr"), str(out)]) == 0
    assert len(list((tmp_path / "items" / "vgr_crops").glob("*.png"))) == 2  # two distinct crops of one image
    assert evaluate_compositional(ColourModel(), out, progress=False)["acc"] == pytest.approx(2 / 3)
    # Winoground's two images per item do not fit an items file
    WRITERS["winoground"](tmp_path / "wg")
    assert main(["data", "make-compositional", "--benchmark", "winoground", str(tmp_path / "wg"), str(out)]) == 2
    assert "evaluate it by name: mmcl eval compositional --dataset winoground" in capsys.readouterr().err
    # a CSV that is not the shapes corpus names both ways in
    write(tmp_path / "other.csv", "filepath,title\na.png,a cat\n")
    assert main(["data", "make-compositional", str(tmp_path / "other.csv"), str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no 'key' column" in err and "--dataset NAME --data-root DIR" in err and "--benchmark NAME" in err
