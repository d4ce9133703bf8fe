"""data.sampler: caption_edits (mmcl.negatives.CaptionEditBatchSampler): partners are exactly the
minimal edits, sit side by side, the epoch is covered once across ranks, and training resumes
exactly."""

import random

import pytest
import torch

from mmcl.data.samplers import partner_groups
from mmcl.errors import ConfigError
from mmcl.negatives import CaptionEditBatchSampler
from mmcl.negatives.duplicates import normalise_caption
from mmcl.recipe import recipe_from_dict
from mmcl.train.recipes import check_recipe

from ..conftest import assert_same_weights, one_and_two_process_losses, straight_and_resumed, tiny_recipe_dict

CAPTIONS = [
    "a red circle left of a blue square",  # 0
    "a blue circle left of a red square",  # 1: 0 with the colours swapped (reorder)
    "A red circle left of a blue square.",  # 2: 0 again, normalised: never 0's partner
    "a red circle right of a blue square",  # 3: 0 with one word replaced
    "a green star",  # 4
    "a green triangle",  # 5: 4 with one word replaced
    "there is a yellow star at the top",  # 6: no partner
    "a photo of nothing at all here",  # 7: no partner
]


def relation(a: str, b: str) -> str | None:
    """The minimal edit between two captions, or None."""
    wa, wb = normalise_caption(a).split(), normalise_caption(b).split()
    if wa == wb:
        return None
    if sorted(wa) == sorted(wb):
        return "reorder"
    if len(wa) == len(wb) and sum(x != y for x, y in zip(wa, wb)) == 1:
        return "replace"
    return None


def corpus(n=300, seed=0):
    rng = random.Random(seed)
    colours, shapes, rels = ["red", "blue", "green"], ["circle", "square"], ["left of", "right of", "above"]
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append(f"a {rng.choice(colours)} {rng.choice(shapes)}")
        else:
            c1, c2, s1, s2 = rng.choice(colours), rng.choice(colours), rng.choice(shapes), rng.choice(shapes)
            out.append(f"a {c1} {s1} {rng.choice(rels)} a {c2} {s2}")
    return out


def test_groups_hold_exactly_the_minimal_edits():
    groups = partner_groups(CAPTIONS)
    related = {frozenset((a, b)) for g in groups for a in g for b in g if relation(CAPTIONS[a], CAPTIONS[b])}
    assert related == {frozenset(p) for p in [(0, 1), (1, 2), (0, 3), (2, 3), (4, 5)]}
    assert not any(6 in g or 7 in g for g in groups)
    assert {frozenset(p) for g in partner_groups(CAPTIONS, ("reorder",)) for p in [g]} == {frozenset((0, 1, 2))}
    with pytest.raises(ValueError, match="edits must be a non-empty list of reorder, replace"):
        partner_groups(CAPTIONS, ("swap",))


@pytest.mark.parametrize("edits", [("reorder", "replace"), ("reorder",), ("replace",)])
def test_pairs_are_edits_of_each_other_and_sit_side_by_side(edits):
    caps = corpus()
    s = CaptionEditBatchSampler(caps, 10, seed=1, edits=edits)
    pairs = s.pairs(random.Random(5))
    assert len(pairs) > 30
    assert len({i for p in pairs for i in p}) == 2 * len(pairs)  # a row is in one pair at most
    for a, b in pairs:
        assert relation(caps[a], caps[b]) in edits, (caps[a], caps[b])
    s.set_epoch(4)
    order = s.epoch_order()
    position = {row: k for k, row in enumerate(order)}
    s2 = CaptionEditBatchSampler(caps, 10, seed=1, edits=edits)
    s2.set_epoch(4)
    assert s2.epoch_order() == order  # seeded by (seed, epoch)
    paired = s.pairs(random.Random(1 * 1_000_003 + 4))
    assert paired and all(abs(position[a] - position[b]) == 1 for a, b in paired)
    s.set_epoch(5)
    assert s.epoch_order() != order


def test_most_rows_with_a_partner_get_one_and_fraction_thins_them():
    caps = corpus(600)
    full = CaptionEditBatchSampler(caps, 10, seed=0)
    n_full = 2 * len(full.pairs(random.Random(0)))
    assert n_full >= 0.8 * full.rows_with_partner
    half = CaptionEditBatchSampler(caps, 10, seed=0, fraction=0.5)
    n_half = 2 * len(half.pairs(random.Random(0)))
    assert 0.3 * n_full < n_half < 0.8 * n_full
    with pytest.raises(ValueError, match="fraction must be in"):
        CaptionEditBatchSampler(caps, 10, fraction=0.0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_epoch_is_covered_without_duplicates_across_ranks(world):
    caps = corpus(301)
    seen = []
    for rank in range(world):
        s = CaptionEditBatchSampler(caps, 5, rank, world, seed=3)
        s.set_epoch(2)
        batches = list(s)
        assert all(len(b) == 5 for b in batches)
        seen += [i for b in batches for i in b]
    full = 301 // (5 * world) * 5 * world
    assert len(seen) == len(set(seen)) == full
    s = CaptionEditBatchSampler(caps, 5, 0, world, seed=3)
    s.set_epoch(2)
    order = s.epoch_order()
    assert sorted(order) == list(range(301)) and set(seen) == set(order[:full])


def test_a_resume_continues_at_the_same_sample():
    caps = corpus(200)
    s = CaptionEditBatchSampler(caps, 8, seed=2)
    s.set_epoch(1)
    straight = [i for b in s for i in b]
    s.set_epoch(1, start_batch=0, start_sample=40)  # e.g. resumed with another batch size
    assert [i for b in s for i in b] == straight[40 : 40 + len(list(s)) * 8]


def edit_recipe(corpus, out_dir, **train):
    data = tiny_recipe_dict(corpus, out_dir, **train)
    data["data"]["sampler"] = "caption_edits"
    return data


def test_config_errors_name_the_choices(tiny_corpus, tmp_path):
    data = edit_recipe(tiny_corpus, tmp_path / "r")
    data["data"]["sampler_kwargs"] = {"share": 0.5}
    with pytest.raises(ConfigError, match="unknown \\['share'\\] .* valid keys: edits, fraction"):
        check_recipe(recipe_from_dict(data))
    data["data"]["sampler_kwargs"] = {"edits": ["swap"]}
    with pytest.raises(ConfigError, match="edits must be a non-empty list of reorder, replace"):
        check_recipe(recipe_from_dict(data))
    data["data"]["sampler_kwargs"] = {"fraction": 1.5}
    with pytest.raises(ConfigError, match="fraction must be a number in \\(0, 1\\]"):
        check_recipe(recipe_from_dict(data))


def test_stop_and_resume_with_the_edit_sampler_equals_a_straight_run(tiny_corpus, tmp_path):
    def check(trainer):
        assert isinstance(trainer.data.sampler, CaptionEditBatchSampler)
        assert trainer.data.sampler.rows_with_partner > 0  # the tiny corpus has edit partners

    straight, resumed = straight_and_resumed(
        tmp_path, lambda out: edit_recipe(tiny_corpus, out, steps=14, checkpoint_every=100), 9, check
    )
    assert_same_weights(straight, resumed)


def test_two_processes_with_the_edit_sampler_match_one_process(tiny_corpus, tmp_path):
    a, b = one_and_two_process_losses(
        tmp_path, lambda out: edit_recipe(tiny_corpus, out, steps=8, checkpoint_every=100)
    )
    assert len(a) == len(b) == 8
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
