"""MoCo: the loss against a hand-written reference, the key queue (ring buffer, checkpointed), the
momentum update, and exactness under data parallelism across two steps (so the queue is used)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmcl.losses import MoCoLoss, momentum_update


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_matches_handwritten_reference_with_a_queue():
    loss_fn = MoCoLoss(queue_size=16, temperature=0.2)
    queue = unit(6, 5, 0)
    loss_fn.enqueue(queue)
    q, k = unit(4, 5, 1).requires_grad_(), unit(4, 5, 2)
    loss = loss_fn(q, k)
    total = 0
    qn = F.normalize(q, dim=-1)  # the loss normalises by default; the gradient sees it
    for i in range(4):
        logits = torch.cat([(qn[i] @ k[i]).view(1), queue @ qn[i]]) / 0.2
        total = total - torch.log_softmax(logits, 0)[0]
    ref = total / 4
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(loss, q, retain_graph=True)[0]
    g_ref = torch.autograd.grad(ref, q)[0]
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert int(loss_fn.queue_len) == 10  # the 4 keys were enqueued after the loss


def test_queue_is_a_ring_buffer():
    loss_fn = MoCoLoss(queue_size=5)
    keys = torch.arange(12, dtype=torch.float64).view(6, 2)
    loss_fn.enqueue(keys[:3])
    assert int(loss_fn.queue_len) == 3 and int(loss_fn.queue_ptr) == 3
    loss_fn.enqueue(keys[3:6])  # 6 keys in a 5-slot queue: the oldest is overwritten
    assert int(loss_fn.queue_len) == 5 and int(loss_fn.queue_ptr) == 1
    assert sorted(loss_fn.negatives()[:, 0].tolist()) == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_queue_survives_checkpoint(tmp_path):
    a = MoCoLoss(queue_size=8)
    a(unit(3, 4, 0), unit(3, 4, 1))
    a(unit(3, 4, 2), unit(3, 4, 3))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = MoCoLoss(queue_size=8)
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    torch.testing.assert_close(b.queue, a.queue)
    assert int(b.queue_ptr) == 6 and int(b.queue_len) == 6
    q, k = unit(3, 4, 4), unit(3, 4, 5)
    torch.testing.assert_close(a(q, k), b(q, k))


def test_momentum_update_and_validation():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = 0.9 * target.weight.detach() + 0.1 * online.weight.detach()
    momentum_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, expected)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, online, 1.5)
    with pytest.raises(ValueError, match="queue_size"):
        MoCoLoss(queue_size=0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_steps(sizes, rank, world):
    """Two MoCo steps on this rank's rows; the second one uses the queue the first one filled."""
    n = sum(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    loss_fn = MoCoLoss(queue_size=32, rank=rank, world_size=world)
    out = []
    for step in range(2):
        q, k = unit(n, 6, 10 + step)[lo:hi].clone().requires_grad_(), unit(n, 6, 20 + step)[lo:hi]
        loss = loss_fn(q, k)
        loss.backward()
        out.append((loss.detach(), q.grad / world))
    return out, loss_fn.negatives()


def worker(rank, world, port, sizes, result):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    steps, queue = two_steps(sizes, rank, world)
    losses = []
    for loss, _ in steps:
        gathered = [torch.zeros((), dtype=torch.float64) for _ in range(world)]
        dist.all_gather(gathered, loss)
        losses.append(torch.stack(gathered).mean())
    result[rank] = {"losses": losses, "grads": [g for _, g in steps], "queue": queue}
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [[3, 5], pytest.param([2, 3, 1, 2], marks=pytest.mark.slow)])
def test_processes_equal_one_process_whole_batch(sizes):
    world = len(sizes)
    result = mp.Manager().dict()
    mp.spawn(worker, args=(world, free_port(), sizes, result), nprocs=world, join=True)
    ref_steps, ref_queue = two_steps([sum(sizes)], 0, 1)
    for rank in range(world):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        r = result[rank]
        torch.testing.assert_close(r["queue"], ref_queue)
        for (loss, grad), got_loss, got_grad in zip(ref_steps, r["losses"], r["grads"]):
            torch.testing.assert_close(got_loss, loss, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(got_grad, grad[lo:hi], rtol=1e-10, atol=1e-12)
