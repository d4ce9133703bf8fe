"""data.sampler: clusters (mmcl.negatives.ClusterBatchSampler): epoch coverage across ranks,
neighbourhood grouping, exact resume, and a 2-process run equal to one process."""

import pytest
import torch
import torch.nn.functional as F

from mmcl.data.samplers import ClusterBatchSampler, ResumableBatchSampler
from mmcl.errors import ConfigError
from mmcl.losses import create_loss
from mmcl.recipe import recipe_from_dict
from mmcl.train.recipes import check_recipe

from ..conftest import assert_same_weights, one_and_two_process_losses, straight_and_resumed, tiny_recipe_dict


def families(n=240, k=8, seed=0):
    """k clusters in two families of mutually close centroids; samples spread over them, some unseen."""
    g = torch.Generator().manual_seed(seed)
    base = torch.eye(8)[:2]
    cents = F.normalize(base.repeat_interleave(k // 2, 0) + 0.1 * torch.randn(k, 8, generator=g), dim=1)
    table = torch.randint(0, k, (n,), generator=g)
    table[torch.rand(n, generator=g) < 0.1] = -1
    return table, cents


def ranks_batches(sampler_cls, n, batch, world, table=None, cents=None, **kw):
    out = []
    for rank in range(world):
        s = sampler_cls(n, batch, rank, world, seed=3, **kw)
        if table is not None:
            s.set_clusters(table, cents)
        s.set_epoch(1)
        out.append(list(s))
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_epoch_is_covered_without_duplicates_across_ranks(world):
    table, cents = families(n=241)
    per_rank = ranks_batches(ClusterBatchSampler, 241, 5, world, table, cents, clusters_per_block=2, block=16)
    seen = [i for batches in per_rank for b in batches for i in b]
    full = 241 // (5 * world) * 5 * world  # the incomplete last global batch is dropped
    assert len(seen) == len(set(seen)) == full
    assert all(len(b) == 5 for batches in per_rank for b in batches)
    # Every index of the epoch order is used once (nothing beyond the dropped tail is lost).
    s = ClusterBatchSampler(241, 5, 0, world, seed=3, clusters_per_block=2, block=16)
    s.set_clusters(table, cents)
    s.set_epoch(1)
    order = s.epoch_order()
    assert sorted(order) == list(range(241)) and set(seen) == set(order[:full])


def test_blocks_come_from_neighbouring_clusters():
    table, cents = families()
    family = lambda i: -1 if table[i] < 0 else int(table[i]) // 4  # noqa: E731
    s = ClusterBatchSampler(240, 8, seed=0, clusters_per_block=2, block=16)
    s.set_clusters(table, cents)
    order = s.epoch_order()
    blocks = [order[i : i + 16] for i in range(0, 240, 16)]
    pure = [len({family(i) for i in b}) == 1 for b in blocks]
    assert sum(pure) >= 0.7 * len(blocks)
    used = [len({int(table[i]) for i in b}) for b in blocks]
    assert sorted(used)[len(used) // 2] <= 2  # mostly the seed cluster and its nearest neighbour
    # A plain permutation mixes the families in (nearly) every block: the test can fail.
    plain = ResumableBatchSampler(240, 8, seed=0).epoch_order()
    assert sum(len({family(i) for i in plain[i : i + 16]}) == 1 for i in range(0, 240, 16)) <= 1


def test_without_clusters_the_order_is_the_plain_permutation():
    s, plain = ClusterBatchSampler(50, 4, seed=5), ResumableBatchSampler(50, 4, seed=5)
    for epoch in (0, 3):
        s.set_epoch(epoch), plain.set_epoch(epoch)
        assert list(s) == list(plain)


def test_resume_positions_and_state_round_trip():
    table, cents = families(n=120)
    s = ClusterBatchSampler(120, 4, seed=1, block=12)
    s.set_clusters(table, cents)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=5)
    assert list(s) == full[5:]
    again = ClusterBatchSampler(120, 4, seed=1, block=12)
    again.load_state_dict(s.state_dict())
    again.set_epoch(2)
    assert list(again) == full
    # Another world size continues at the same sample: 2 ranks at batch 2 from sample 20.
    flat = [i for b in full for i in b]
    halves = []
    for rank in range(2):
        r = ClusterBatchSampler(120, 2, rank, 2, seed=1, block=12)
        r.load_state_dict(s.state_dict())
        r.set_epoch(2, start_sample=20)
        halves.append(list(r))
    merged = [i for pair in zip(*halves) for b in pair for i in b]
    assert merged == flat[20 : 20 + len(merged)]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="clusters_per_block must be >= 1"):
        ClusterBatchSampler(10, 2, clusters_per_block=0)
    with pytest.raises(ValueError, match="block must be >= 1"):
        ClusterBatchSampler(10, 2, block=0)


def test_the_loss_records_each_samples_cluster_and_remaps_after_reclustering():
    torch.manual_seed(0)
    loss = create_loss("cluster_infonce", k=4, gate=1.1, mode="periodic", bank_size=64, recluster_every=2)
    assert loss.sample_table() == (None, None)
    for step in range(4):
        img, txt = F.normalize(torch.randn(16, 8), dim=1), F.normalize(torch.randn(16, 8), dim=1)
        loss.batch_ids = torch.arange(16) + 16 * step
        loss(img, txt, torch.tensor(10.0))
    table, cents = loss.sample_table()
    assert table.shape == (64,) and cents.shape == (4, 8)
    assert ((table >= 0) & (table < 4)).all()  # the gate opened on the first batch
    # After a re-clustering, recorded clusters move to the new centroid nearest their old one.
    cents_now = loss.centroids.centroids.clone()
    loss.sample_clusters = torch.tensor([0, 1, 2, 3, -1])
    loss._remap(cents_now[[2, 0, 3, 1]])
    assert loss.sample_clusters.tolist() == [2, 0, 3, 1, -1]
    # The table is part of the loss state (checkpoints), whatever its length.
    fresh = create_loss("cluster_infonce", k=4, gate=1.1, mode="periodic", bank_size=64, recluster_every=2)
    loss.sample_clusters = table
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.sample_table()[0], table)


def sampler_recipe(corpus, out, **train):
    data = tiny_recipe_dict(corpus, out, **train)
    data["eval"]["datasets"] = []
    data["loss"] = {"name": "cluster_infonce", "kwargs": {"k": 4, "gate": 1.1, "false_negatives": "mask"}}
    data["data"]["sampler"] = "clusters"
    data["data"]["sampler_kwargs"] = {"clusters_per_block": 2, "block": 8}
    return data


def test_config_errors_name_the_choices(tiny_corpus, tmp_path):
    data = sampler_recipe(tiny_corpus, tmp_path / "r")
    data["loss"] = {"name": "infonce"}
    with pytest.raises(ConfigError, match="data.sampler: clusters .* cluster_infonce .* valid choices with this loss"):
        check_recipe(recipe_from_dict(data))
    data = sampler_recipe(tiny_corpus, tmp_path / "r")
    data["data"]["sampler_kwargs"] = {"blocks": 3}
    with pytest.raises(ConfigError, match="unknown \\['blocks'\\]; valid keys: block, clusters_per_block"):
        check_recipe(recipe_from_dict(data))


def test_stop_and_resume_with_the_cluster_sampler_equals_a_straight_run(tiny_corpus, tmp_path):
    # 48 samples / batch 8 = 6 batches per epoch: epoch 1 is ordered by clusters; stop inside it.
    straight, resumed = straight_and_resumed(
        tmp_path, lambda out: sampler_recipe(tiny_corpus, out, steps=14, checkpoint_every=100), 9
    )
    state = torch.load(straight / "state.pt", weights_only=True)
    assert state["sampler"]["clusters"] is not None and (state["sampler"]["clusters"] >= 0).any()
    assert_same_weights(straight, resumed)


def test_two_processes_with_the_cluster_sampler_match_one_process(tiny_corpus, tmp_path):
    a, b = one_and_two_process_losses(
        tmp_path, lambda out: sampler_recipe(tiny_corpus, out, steps=9, checkpoint_every=100)
    )
    assert len(a) == len(b) == 9  # the last 3 steps are in the cluster-ordered epoch
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
