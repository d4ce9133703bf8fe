"""The streaming engine: disjoint readers, exact resume, mixing weights, unreadable shards."""

from collections import Counter

import pytest
import torch

from mmcl.data.stream import Shard, StreamDataset, merge_positions


class Broken(OSError):
    pass


def make_shards(sizes, broken=(), source=None):
    def reader(s, n):
        def read(skip):
            for i in range(skip, n):
                if s in broken and i == n // 2:
                    raise Broken("truncated")
                yield (s, i)

        return read

    return [
        Shard(f"s{s}", reader(s, n), source=(source or {}).get(s, 0), errors=(OSError,)) for s, n in enumerate(sizes)
    ]


def decode(record, shard, n, epoch):
    s, i = record
    if i % 10 == 9:  # every tenth record is unusable
        return None, "corrupt_image"
    return {"index": s * 1000 + i}


def collate(items):
    return {
        "index": [it["index"] for it in items if isinstance(it, dict)],
        "size": sum(isinstance(it, dict) for it in items),
        "skipped": dict(Counter(it[1] for it in items if isinstance(it, tuple))),
    }


def stream(shards, rank=0, world=1, **kw):
    kw.setdefault("shuffle_block", 7)
    return StreamDataset(shards, decode, collate, batch_size=5, rank=rank, world_size=world, seed=3, **kw)


def usable(sizes, broken=()):
    return {s * 1000 + i for s, n in enumerate(sizes) for i in range(n // 2 if s in broken else n) if i % 10 != 9}


def run(ds, epoch=0, progress=None, limit=None, workers=0):
    ds.set_epoch(epoch, progress)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, collate_fn=lambda b: b, num_workers=workers)
    seen, prog, skipped = [], dict(progress or {}), Counter()
    for n, batch in enumerate(loader):
        if limit is not None and n == limit:
            break
        seen += batch["index"]
        skipped.update(batch["skipped"])
        merge_positions(prog, batch["position"])
    return seen, prog, skipped


SIZES = [23, 40, 17, 31, 8, 25]


@pytest.mark.parametrize("world, workers", [(1, 0), (1, 2), (2, 1), (2, 2), (3, 2)])
def test_readers_are_disjoint_and_cover_the_epoch(world, workers):
    parts = [run(stream(make_shards(SIZES), r, world), workers=workers)[0] for r in range(world)]
    every = [i for p in parts for i in p]
    assert len(every) == len(set(every)) and set(every) == usable(SIZES)
    # every batch but each reader's last is full
    assert all(len(p) > 0 for p in parts)


def test_order_is_seeded_and_changes_with_the_epoch():
    a = run(stream(make_shards(SIZES)))[0]
    assert a == run(stream(make_shards(SIZES)))[0]
    assert a != run(stream(make_shards(SIZES)), epoch=1)[0]
    assert sorted(a) == sorted(run(stream(make_shards(SIZES)), epoch=1)[0])
    assert a != sorted(a)  # shuffled within blocks and across shards


@pytest.mark.parametrize("before, after", [((1, 2), (1, 2)), ((1, 2), (1, 0)), ((2, 2), (1, 1)), ((1, 0), (3, 2))])
def test_resume_reads_every_sample_of_the_epoch_exactly_once(before, after):
    """Stop part-way with one layout of readers, resume with another: nothing repeated or lost."""
    (w0, k0), (w1, k1) = before, after
    seen, progress = [], {}
    for r in range(w0):
        s, p, _ = run(stream(make_shards(SIZES), r, w0), limit=2, workers=k0)
        seen += s
        for k, v in p.items():
            merge_positions(progress, {k: v})
    assert 0 < len(seen) < len(usable(SIZES))
    for r in range(w1):
        seen += run(stream(make_shards(SIZES), r, w1), progress=progress, workers=k1)[0]
    assert len(seen) == len(set(seen)) and set(seen) == usable(SIZES)


def test_an_unreadable_shard_is_counted_once_and_the_rest_goes_on():
    seen, _, skipped = run(stream(make_shards(SIZES, broken={1})))
    assert skipped["unreadable_shard"] == 1
    assert set(seen) == usable(SIZES, broken={1})
    # the skips of the epoch, counted exactly: unusable records of the readable part
    n_bad = sum(1 for s, n in enumerate(SIZES) for i in range(n // 2 if s == 1 else n) if i % 10 == 9)
    assert skipped["corrupt_image"] == n_bad


def test_resampled_mode_mixes_sources_by_weight_and_resumes_exactly():
    shards = make_shards([50, 50, 50, 50], source={0: 0, 1: 0, 2: 1, 3: 1})
    ds = stream(shards, resampled=True, weights=[0.8, 0.2])
    seen, _, _ = run(ds, limit=400)
    share = sum(i // 1000 < 2 for i in seen) / len(seen)
    assert 0.75 < share < 0.85
    # resume with the same layout continues the same stream
    full = run(stream(shards, resampled=True, weights=[0.8, 0.2]), limit=12)[0]
    first, progress, _ = run(stream(shards, resampled=True, weights=[0.8, 0.2]), limit=5)
    rest = run(stream(shards, resampled=True, weights=[0.8, 0.2]), progress=progress, limit=7)[0]
    assert first + rest == full


def test_merging_positions_keeps_the_furthest_whatever_the_order():
    """Each rank holds a copy of the progress after a resume; a stale copy must not move a shard back."""
    fresh, stale = {"3": 80, "4": -1, "r0": [2, 5], "readers": 2}, {"3": 50, "4": 30, "r0": [1, 90], "readers": 2}
    for parts in ([fresh, stale], [stale, fresh]):
        into = {}
        for p in parts:
            merge_positions(into, p)
        assert into == fresh
    into = {"r0": [3, 1], "r1": [2, 2], "readers": 2}
    merge_positions(into, {"r0": [0, 4], "readers": 3})  # a new layout replaces the old readers' keys
    assert into == {"r0": [0, 4], "readers": 3}


def test_a_reader_gives_up_on_a_source_with_no_usable_samples(monkeypatch):
    import mmcl.data.stream as stream_module

    monkeypatch.setattr(stream_module, "MAX_BAD_RUN", 50)

    def bad(record, shard, n, epoch):
        return None, "missing_image"

    ds = StreamDataset(make_shards([100]), bad, collate, batch_size=5)
    with pytest.raises(RuntimeError, match="50 samples in a row could not be used.*missing_image"):
        run(ds)
