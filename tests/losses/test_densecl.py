"""DenseCL: the location matching (by features, and by crop geometry), the dense term against a
hand-written reference, the warm-up, MoCo v2 as the special case dense_weight=0, and both queues
(and the call count) checkpointed."""

import pytest
import torch
import torch.nn.functional as F

from mmcl.losses import DenseCLLoss, MoCoLoss, create_loss
from mmcl.losses.densecl import cell_centres, match_by_geometry, match_locations


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def inputs(b=3, s=4, d=5, c=6, seed=0):
    return (
        rand(b, d, seed=seed).requires_grad_(),
        rand(b, d, seed=seed + 1),
        rand(b, s, d, seed=seed + 2).requires_grad_(),
        rand(b, s, d, seed=seed + 3),
        rand(b, s, c, seed=seed + 4),
        rand(b, s, c, seed=seed + 5),
    )


def test_match_locations_picks_the_most_similar_key_cell():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    k = torch.tensor([[[0.0, 3.0], [5.0, 0.1], [1.0, 0.9]]])  # cosine, not dot product: scale is ignored
    assert match_locations(q, k).tolist() == [[1, 0, 2]]


def test_dense_term_matches_handwritten_reference():
    loss_fn = DenseCLLoss(queue_size=16, temperature=0.2, dense_weight=1.0)
    queue = F.normalize(rand(7, 5, seed=9), dim=-1)
    loss_fn.dense_keys.enqueue(queue)
    q, k, qd, kd, qm, km = inputs()
    loss = loss_fn(q, k, qd, kd, qm, km)
    qdn, kdn = F.normalize(qd, dim=-1), F.normalize(kd, dim=-1)
    total, n = 0, 0
    for b in range(3):
        for i in range(4):
            sims = [F.cosine_similarity(qm[b, i], km[b, j], dim=0) for j in range(4)]
            j = int(torch.stack(sims).argmax())
            logits = torch.cat([(qdn[b, i] @ kdn[b, j]).view(1), queue @ qdn[b, i]]) / 0.2
            total, n = total - torch.log_softmax(logits, 0)[0], n + 1
    ref = total / n
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(loss, qd, retain_graph=True)[0]
    torch.testing.assert_close(g_ours, torch.autograd.grad(ref, qd)[0], rtol=1e-10, atol=1e-12)
    # the pooled dense keys of the batch went into the dense queue, after the loss
    assert int(loss_fn.dense_keys.queue_len) == 10
    torch.testing.assert_close(loss_fn.dense_keys.queue[7:10], F.normalize(kd.mean(1), dim=-1))


def test_warm_up_then_mix_and_weight_zero_is_moco():
    dense = DenseCLLoss(queue_size=32, dense_weight=0.3, warmup_steps=2)
    moco = MoCoLoss(queue_size=32)
    weights = []
    for step in range(4):
        x = inputs(seed=10 * step)
        weights.append(dense.current_weight())
        got = dense(*x)
        g = moco(x[0], x[1])
        if step < 2:
            torch.testing.assert_close(got, g)  # the warm-up trains the global (MoCo v2) term alone
        else:
            assert not torch.allclose(got, g)
            stats = dense.last_stats
            torch.testing.assert_close(got.item(), 0.7 * stats["global_loss"] + 0.3 * stats["dense_loss"])
    assert weights == [0.0, 0.0, 0.3, 0.3]
    off = DenseCLLoss(queue_size=32, dense_weight=0.0)
    reference = MoCoLoss(queue_size=32)
    for step in range(2):
        x = inputs(seed=step)
        torch.testing.assert_close(off(*x), reference(x[0], x[1]))


def test_dense_query_gets_gradient_even_during_warm_up():
    """The dense head stays in the graph (zero gradient in the warm-up), as DDP needs."""
    loss_fn = DenseCLLoss(queue_size=8, warmup_steps=5)
    x = inputs()
    loss_fn(*x).backward()
    assert x[2].grad is not None and torch.count_nonzero(x[2].grad) == 0
    assert x[0].grad is not None


def test_state_dict_restores_both_queues_and_the_call_count():
    a = create_loss("densecl", queue_size=8, warmup_steps=3)
    for step in range(4):
        a(*inputs(seed=step))
    b = create_loss("densecl", queue_size=8, warmup_steps=3)
    b.load_state_dict(a.state_dict())
    assert int(b.calls) == 4 and b.current_weight() == 0.5
    x = inputs(seed=99)
    torch.testing.assert_close(b(*x), a(*x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dense_weight": 1.5}, "dense_weight must be in"),
        ({"warmup_steps": -1}, "warmup_steps must be"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"match": "pixels"}, "match must be one of features, geometry"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseCLLoss(**kwargs)


def test_shape_mismatch_is_a_clear_error():
    q, k, qd, kd, qm, km = inputs()
    with pytest.raises(ValueError, match="expected dense_query"):
        DenseCLLoss()(q, k, qd, kd, qm[:, :2], km)


def box(*xyxy):
    return torch.tensor([xyxy], dtype=torch.float64)


def test_cell_centres_follow_the_crop_and_its_flip():
    whole = cell_centres(box(0, 0, 1, 1), 2)[0]
    assert whole.tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]  # row-major (x, y)
    flipped = cell_centres(box(1, 0, 0, 1), 2)[0]  # x0 > x1: the view's left column is the image's right
    assert flipped[:, 0].tolist() == [0.75, 0.25, 0.75, 0.25]
    torch.testing.assert_close(cell_centres(box(0.2, 0.4, 0.6, 0.8), 1)[0], torch.tensor([[0.4, 0.6]]).double())


def test_geometry_pairs_each_cell_with_the_nearest_key_cell_inside_the_key_view():
    idx, valid = match_by_geometry(box(0, 0, 1, 1), box(0, 0, 1, 1), 9, 9)
    assert idx.tolist() == [list(range(9))] and valid.all()
    idx, valid = match_by_geometry(box(0, 0, 1, 1), box(1, 0, 0, 1), 9, 9)  # key view flipped
    assert idx.tolist() == [[2, 1, 0, 5, 4, 3, 8, 7, 6]] and valid.all()
    # key = the left 60% of the image: key cell centres at x 0.15 and 0.45; query cells at x 0.25, 0.75
    idx, valid = match_by_geometry(box(0, 0, 1, 1), box(0, 0, 0.6, 1), 4, 4)
    assert valid.tolist() == [[True, False, True, False]]
    assert idx[0, 0] == 0 and idx[0, 2] == 2
    _, valid = match_by_geometry(box(0, 0, 0.4, 0.4), box(0.5, 0.5, 1, 1), 4, 4)  # no overlap
    assert not valid.any()
    with pytest.raises(ValueError, match="square feature map"):
        match_by_geometry(box(0, 0, 1, 1), box(0, 0, 1, 1), 6, 6)


def test_geometry_dense_term_matches_handwritten_reference():
    loss_fn = DenseCLLoss(queue_size=16, temperature=0.2, dense_weight=1.0, match="geometry")
    queue = F.normalize(rand(7, 5, seed=9), dim=-1)
    loss_fn.dense_keys.enqueue(queue)
    q, k, qd, kd, qm, km = inputs()  # 3 images, 2 x 2 maps
    qb = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 0.9, 0.5], [0.0, 0.0, 0.3, 0.3]])
    kb = torch.tensor([[0.0, 0.0, 0.6, 1.0], [0.9, 0.0, 0.1, 0.6], [0.5, 0.5, 1.0, 1.0]])
    loss_fn.batch_boxes = (qb, kb)
    loss = loss_fn(q, k, qd, kd, qm, km)
    qdn, kdn = F.normalize(qd, dim=-1), F.normalize(kd, dim=-1)
    total, n = 0, 0
    for b in range(3):
        for i in range(4):
            r, c = divmod(i, 2)
            x = qb[b, 0] + (c + 0.5) / 2 * (qb[b, 2] - qb[b, 0])
            y = qb[b, 1] + (r + 0.5) / 2 * (qb[b, 3] - qb[b, 1])
            if not (min(kb[b, 0], kb[b, 2]) <= x <= max(kb[b, 0], kb[b, 2]) and kb[b, 1] <= y <= kb[b, 3]):
                continue  # outside the key view: no positive
            centres = [
                (kb[b, 0] + (cc + 0.5) / 2 * (kb[b, 2] - kb[b, 0]), kb[b, 1] + (rr + 0.5) / 2 * (kb[b, 3] - kb[b, 1]))
                for rr in range(2)
                for cc in range(2)
            ]
            j = min(range(4), key=lambda j: (centres[j][0] - x) ** 2 + (centres[j][1] - y) ** 2)
            logits = torch.cat([(qdn[b, i] @ kdn[b, j]).view(1), queue @ qdn[b, i]]) / 0.2
            total, n = total - torch.log_softmax(logits, 0)[0], n + 1
    assert 0 < n < 12  # some cells have a positive, some do not
    ref = total / n
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(loss, qd, retain_graph=True)[0], torch.autograd.grad(ref, qd)[0], rtol=1e-10, atol=1e-12
    )
    assert loss_fn.last_stats["matched_cells"] == n / 12


def test_geometry_without_crop_boxes_is_a_clear_error():
    with pytest.raises(ValueError, match="needs each view's crop box.*or use match: features"):
        DenseCLLoss(match="geometry")(*inputs())


@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5])
def test_cell_negatives_add_the_far_cells_of_the_same_key_view(radius):
    loss_fn = DenseCLLoss(queue_size=16, temperature=0.2, dense_weight=1.0, cell_negatives=radius)
    queue = F.normalize(rand(7, 5, seed=9), dim=-1)
    loss_fn.dense_keys.enqueue(queue)
    q, k, qd, kd, qm, km = inputs(s=9)  # 3 x 3 maps
    loss = loss_fn(q, k, qd, kd, qm, km)
    qdn, kdn = F.normalize(qd, dim=-1), F.normalize(kd, dim=-1)
    total, n, extra = 0, 0, 0
    for b in range(3):
        for i in range(9):
            j = int(torch.stack([F.cosine_similarity(qm[b, i], km[b, m], dim=0) for m in range(9)]).argmax())
            far = [m for m in range(9) if ((m // 3 - j // 3) ** 2 + (m % 3 - j % 3) ** 2) ** 0.5 > radius]
            extra += len(far)
            logits = torch.cat([(qdn[b, i] @ kdn[b, j]).view(1), queue @ qdn[b, i], kdn[b, far] @ qdn[b, i]]) / 0.2
            total, n = total - torch.log_softmax(logits, 0)[0], n + 1
    assert extra > 0 and (radius > 0 or extra == 3 * 9 * 8)  # radius 0: every other cell
    ref = total / n
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(loss, qd, retain_graph=True)[0], torch.autograd.grad(ref, qd)[0], rtol=1e-10, atol=1e-12
    )


def test_cell_negatives_with_geometry_leave_unmatched_cells_out():
    boxes = (
        torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.3, 0.3]]),
        torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]),
    )
    q, k, qd, kd, qm, km = inputs(b=2, s=4)
    with_cells = DenseCLLoss(dense_weight=1.0, match="geometry", cell_negatives=0.5)
    with_cells.batch_boxes = boxes
    loss = with_cells(q, k, qd, kd, qm, km)  # image 1 has no matched cell; image 0 the identity
    qdn, kdn = F.normalize(qd[0], dim=-1), F.normalize(kd[0], dim=-1)
    ref = -torch.log_softmax((qdn @ kdn.T) / 0.2, dim=1).diag().mean()  # every other cell is farther than 0.5
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("radius", [-1, True, "far", float("nan")])
def test_bad_cell_negatives(radius):
    with pytest.raises(ValueError, match="cell_negatives must be null"):
        DenseCLLoss(cell_negatives=radius)
