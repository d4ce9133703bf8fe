"""The generated corpus: deterministic, held-out combinations really held out, labels consistent."""

import csv
import json

from mmcl.data.synthetic import HELD_OUT, _manifest, class_names, corpus_is_current, generate_scene, make_corpus
from mmcl.recipe import SyntheticConfig


def rows(root, split):
    with open(root / f"{split}.csv") as f:
        return list(csv.DictReader(f))


def test_same_seed_same_corpus_different_seed_differs():
    cfg = SyntheticConfig()
    a_img, a = generate_scene(0, "train", 5, cfg)
    b_img, b = generate_scene(0, "train", 5, cfg)
    _, c = generate_scene(1, "train", 5, cfg)
    assert a == b and list(a_img.getdata()) == list(b_img.getdata())
    assert a.caption != c.caption or a.objects != c.objects


def test_splits_respect_held_out_combinations():
    cfg = SyntheticConfig()
    held = set(HELD_OUT)
    for i in range(300):
        _, s = generate_scene(0, "train", i, cfg)
        assert all((o["colour"], o["shape"]) not in held for o in s.objects)
        _, n = generate_scene(0, "novel", i, cfg)
        assert (n.objects[0]["colour"], n.objects[0]["shape"]) in held


def test_labels_and_captions_describe_the_scene():
    cfg = SyntheticConfig(short_caption_prob=0.0)
    names = class_names()
    assert len(names) == 32
    for i in range(100):
        _, s = generate_scene(0, "test", i, cfg)
        o = s.objects[0]
        assert o["colour"] in s.caption and o["shape"] in s.caption and o["size"] in s.caption
        if len(s.objects) == 1:
            assert names[s.label] == f"{o['colour']} {o['shape']}"
        else:
            assert s.label == -1 and s.objects[1]["colour"] in s.caption


def test_written_corpus(tmp_path):
    cfg = SyntheticConfig(root=str(tmp_path / "c"), n_train=10, n_test=5, n_novel=4, image_size=24)
    root = make_corpus(cfg, progress=False)
    assert len(rows(root, "train")) == 10 and len(rows(root, "novel")) == 4
    assert (root / rows(root, "test")[0]["filepath"]).is_file()
    assert (root / "classnames.txt").read_text().splitlines() == class_names()
    assert "{}" in (root / "templates.txt").read_text()
    assert corpus_is_current(cfg)
    assert not corpus_is_current(SyntheticConfig(root=cfg.root, n_train=11, n_test=5, n_novel=4, image_size=24))


def test_a_larger_split_extends_the_smaller_one(tmp_path):
    # evaluation/ssl/bench_ssl.py probes on a longer test split than the recipe's: its first items
    # must be the recipe's test split, image for image, whatever the other splits' sizes
    small = make_corpus(SyntheticConfig(root=str(tmp_path / "s"), n_train=6, n_test=4, n_novel=2, image_size=24), False)
    large = make_corpus(SyntheticConfig(root=str(tmp_path / "l"), n_train=0, n_test=9, n_novel=0, image_size=24), False)
    assert rows(large, "train") == [] and len(rows(large, "test")) == 9
    assert rows(large, "test")[:4] == rows(small, "test")
    for r in rows(small, "test"):
        assert (large / r["filepath"]).read_bytes() == (small / r["filepath"]).read_bytes()


def test_masks_label_exactly_the_drawn_objects(tmp_path):
    import numpy as np

    cfg = SyntheticConfig(root=str(tmp_path), n_train=6, n_test=2, n_novel=2, image_size=48, masks=True)
    names = class_names()
    for i in range(6):
        img, scene = generate_scene(cfg.seed, "train", i, cfg)
        mask, same = generate_scene(cfg.seed, "train", i, cfg, mask=True)
        assert same == scene and mask.mode == "L"
        m, rgb = np.asarray(mask), np.asarray(img).astype(int)
        drawn = {1 + names.index(f"{o['colour']} {o['shape']}") for o in scene.objects}
        assert set(np.unique(m)) - {0} <= drawn and set(np.unique(m)) & drawn  # a later object may cover one
        background = rgb[m == 0]
        assert (background.max(axis=1) - background.min(axis=1)).max() == 0  # grey background only
        assert (m > 0).mean() > 0.01
    make_corpus(cfg, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    assert (tmp_path / rows[0]["mask"]).is_file()
    # corpora written without the option keep their manifest (and are not regenerated)
    assert corpus_is_current(cfg) and not corpus_is_current(SyntheticConfig(**{**cfg.__dict__, "masks": False}))


def test_many_object_scenes(tmp_path):
    import numpy as np

    cfg = SyntheticConfig(root=str(tmp_path), single_fraction=0.0, max_objects=6, short_caption_prob=0.0, masks=True)
    names, counts = class_names(), set()
    for i in range(120):
        _, s = generate_scene(cfg.seed, "train", i, cfg)
        counts.add(len(s.objects))
        assert 2 <= len(s.objects) <= 6 and s.label == -1
        assert len({tuple(o["cell"]) for o in s.objects}) == len(s.objects)  # a cell of its own each
        for o in s.objects:  # every object is named, with its size (and, from the third on, its position)
            assert f"{o['size']} {o['colour']} {o['shape']}" in s.caption and f"{o['colour']} {o['shape']}" in s.key
        if len(s.objects) > 2:
            assert s.key.count("|") == 2 * len(s.objects) - 1 and s.caption.count(" at the ") + s.caption.count(
                " in the centre"
            ) == len(s.objects)
        if i < 20:
            mask, same = generate_scene(cfg.seed, "train", i, cfg, mask=True)
            drawn = {1 + names.index(f"{o['colour']} {o['shape']}") for o in s.objects}
            assert same == s and set(np.unique(np.asarray(mask))) - {0} <= drawn
    assert counts == {2, 3, 4, 5, 6}
    _, short = generate_scene(0, "train", 0, SyntheticConfig(single_fraction=0.0, max_objects=9, short_caption_prob=1))
    assert len(short.objects) > 2 and short.caption.count(" and ") == 1
    assert all(o["colour"] in short.caption for o in short.objects)
    assert not any(word in short.caption for word in ("small", "medium", "large", " at the ", "centre"))
    written = SyntheticConfig(**{**cfg.__dict__, "n_train": 4, "n_test": 2, "n_novel": 2, "image_size": 24})
    make_corpus(written, progress=False)
    assert corpus_is_current(written) and not corpus_is_current(
        SyntheticConfig(**{**written.__dict__, "max_objects": 5})
    )


def test_default_max_objects_keeps_the_scenes_written_before_it():
    # the first training scenes of seed 0 as the generator drew them before max_objects existed
    before = [
        "small blue square|in the centre|above|small red circle",
        "medium yellow star|at the top left|left of|large purple square",
        "large yellow triangle|at the left|above|medium purple star",
        "large yellow star|at the bottom right|right of|small red square",
    ]
    cfg = SyntheticConfig(single_fraction=0.0)
    assert [generate_scene(0, "train", i, cfg)[1].key for i in range(4)] == before
    assert "max_objects" not in json.dumps(_manifest(cfg))  # so their manifests still match
