"""InfoNCE under data parallelism (real gloo process groups): DDP-averaged gradients and the mean of
the ranks' losses equal one process with the whole batch, including uneven per-rank batches."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmcl.losses import InfoNCELoss


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole_batch(sizes, seed=0):
    n = sum(sizes)
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=-1)
    return img, txt, torch.tensor(14.0, dtype=torch.float64)


def worker(rank, world, port, sizes, out, chunk_size=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    img, txt, scale = whole_batch(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    x, y = img[lo:hi].clone().requires_grad_(), txt[lo:hi].clone().requires_grad_()
    s = scale.clone().requires_grad_()
    loss = InfoNCELoss(chunk_size=chunk_size)(x, y, s)
    loss.backward()
    # DDP averages parameter gradients over ranks. A tower's gradient is (this rank's feature
    # gradient) x (its rows' Jacobian), so the effective feature gradient is x.grad / W; the logit
    # scale is a replicated parameter, so its gradient is all-reduced and divided by W.
    dist.all_reduce(s.grad)
    losses = [torch.zeros((), dtype=torch.float64) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    out[rank] = {"loss": torch.stack(losses).mean(), "x": x.grad / world, "y": y.grad / world, "s": s.grad / world}
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "sizes,chunk_size",
    [([4, 4], None), ([3, 5], None), ([3, 5], 2), pytest.param([2, 3, 3, 2], None, marks=pytest.mark.slow)],
)
def test_matches_single_process_whole_batch(sizes, chunk_size):
    world = len(sizes)
    out = mp.Manager().dict()
    mp.spawn(worker, args=(world, free_port(), sizes, out, chunk_size), nprocs=world, join=True)
    img, txt, scale = whole_batch(sizes)
    img.requires_grad_(), txt.requires_grad_(), scale.requires_grad_()
    ref = InfoNCELoss()(img, txt, scale)
    ref.backward()
    for rank in range(world):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        r = out[rank]
        torch.testing.assert_close(r["x"], img.grad[lo:hi], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r["y"], txt.grad[lo:hi], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r["s"], scale.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r["loss"], ref.detach(), rtol=1e-10, atol=1e-12)
