"""Memory-bounded cross-entropy over similarity logits: the (rows x columns) logit matrix is
computed ``chunk_size`` rows at a time, in the forward pass and again in the backward pass, so
peak extra memory is O(chunk_size x columns) instead of O(rows x columns).

Row i's loss is ``lse_j(scale * q_i . k_j) - [(1 - eps) * l_i,t_i + eps * mean_j l_ij]`` with target
``t_i = i + offset`` (label smoothing ``eps``, as ``torch.nn.functional.cross_entropy``). Its
gradient w.r.t. the logits is ``softmax(l_i) - (1 - eps) * onehot(t_i) - eps / n_columns``, from
which q, k and scale get theirs by two matrix products per chunk.
"""

from __future__ import annotations

import torch


class _ChunkedRowCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, scale, offset: int, chunk_size: int, smoothing: float):
        n_rows, n_cols = q.shape[0], k.shape[0]
        total = q.new_zeros(())
        lse = q.new_empty(n_rows)
        for start in range(0, n_rows, chunk_size):
            stop = min(start + chunk_size, n_rows)
            logits = torch.mm(q[start:stop], k.T).mul_(scale)
            lse[start:stop] = torch.logsumexp(logits, dim=1)
            rows = torch.arange(stop - start, device=q.device)
            target = logits[rows, rows + start + offset]
            picked = (1 - smoothing) * target + (smoothing * logits.mean(dim=1) if smoothing else 0)
            total = total + (lse[start:stop] - picked).sum()
            del logits
        ctx.save_for_backward(q, k, scale, lse)
        ctx.offset, ctx.chunk_size, ctx.smoothing, ctx.n_cols = offset, chunk_size, smoothing, n_cols
        return total

    @staticmethod
    def backward(ctx, grad_total):
        q, k, scale, lse = ctx.saved_tensors
        offset, chunk_size, eps = ctx.offset, ctx.chunk_size, ctx.smoothing
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dscale = scale.new_zeros(())
        for start in range(0, q.shape[0], chunk_size):
            stop = min(start + chunk_size, q.shape[0])
            sims = q[start:stop] @ k.T
            g = torch.mul(sims, scale).sub_(lse[start:stop, None]).exp_()  # the softmax
            rows = torch.arange(stop - start, device=q.device)
            g[rows, rows + start + offset] -= 1 - eps
            if eps:
                g -= eps / ctx.n_cols
            g *= grad_total
            dscale += torch.dot(g.view(-1), sims.view(-1))
            g *= scale
            dq[start:stop] = g @ k
            dk += g.T @ q[start:stop]
            del sims, g
        return dq, dk, dscale.reshape(scale.shape), None, None, None


def chunked_row_cross_entropy(
    q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, offset: int, chunk_size: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Sum over rows of cross-entropy(scale * q @ k.T, targets = arange(rows) + offset).

    Shape: q (R, D), k (C, D), scale scalar -> scalar. Same value and gradients as the dense
    computation, with O(chunk_size * C) memory.
    """
    return _ChunkedRowCrossEntropy.apply(q, k, scale, offset, chunk_size, label_smoothing)


class _ChunkedSymmetricInfoNCE(torch.autograd.Function):
    """Both directions of InfoNCE from ONE pass over row blocks of S = scale * X Y^T (one process):
    row log-sum-exps directly, column log-sum-exps by an online (max, sum) update. The backward
    pass recomputes each block once and serves both directions: 4 matrix products in all, against
    6 for the dense two-matrix computation, and O(chunk_size x B) memory."""

    @staticmethod
    def forward(ctx, x, y, scale, chunk_size: int, eps: float):
        n = x.shape[0]
        row_lse = x.new_empty(n)
        diag = x.new_empty(n)
        col_max = x.new_full((n,), float("-inf"))
        col_sum = x.new_zeros(n)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            logits = torch.mm(x[start:stop], y.T).mul_(scale)
            row_lse[start:stop] = torch.logsumexp(logits, dim=1)
            rows = torch.arange(stop - start, device=x.device)
            diag[start:stop] = logits[rows, rows + start]
            new_max = torch.maximum(col_max, logits.max(dim=0).values)
            col_sum = col_sum * torch.exp(col_max - new_max) + logits.sub_(new_max).exp_().sum(dim=0)
            col_max = new_max
            del logits
        col_lse = col_max + torch.log(col_sum)
        total = (row_lse + col_lse).sum() - 2 * (1 - eps) * diag.sum()
        if eps:  # mean logit of row i is scale * x_i . mean(y); of column j, scale * y_j . mean(x)
            total = total - eps * scale * (x @ y.mean(0)).sum() - eps * scale * (y @ x.mean(0)).sum()
        ctx.save_for_backward(x, y, scale, row_lse, col_lse)
        ctx.chunk_size, ctx.eps = chunk_size, eps
        return total

    @staticmethod
    def backward(ctx, grad_total):
        x, y, scale, row_lse, col_lse = ctx.saved_tensors
        chunk_size, eps, n = ctx.chunk_size, ctx.eps, x.shape[0]
        dx = torch.empty_like(x)
        dy = torch.zeros_like(y)
        dscale = scale.new_zeros(())
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            sims = x[start:stop] @ y.T
            logits = sims * scale
            g = torch.sub(logits, row_lse[start:stop, None]).exp_()
            g += logits.sub_(col_lse[None, :]).exp_()
            del logits
            rows = torch.arange(stop - start, device=x.device)
            g[rows, rows + start] -= 2 * (1 - eps)
            if eps:
                g -= 2 * eps / n
            g *= grad_total
            dscale += torch.dot(g.view(-1), sims.view(-1))
            g *= scale
            dx[start:stop] = g @ y
            dy += g.T @ x[start:stop]
            del sims, g
        return dx, dy, dscale.reshape(scale.shape), None, None


def chunked_symmetric_infonce(
    x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, chunk_size: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Sum of both directions' cross-entropies of ``scale * x @ y.T`` with diagonal targets, for
    one process. Shape: x, y (B, D), scale scalar -> scalar (divide by 2B for the mean loss)."""
    return _ChunkedSymmetricInfoNCE.apply(x, y, scale, chunk_size, label_smoothing)


class _ChunkedSigmoid(torch.autograd.Function):
    """Sum over all (row, column) pairs of -logsigmoid(z * (scale * q . k + bias)), z = +1 on the
    targets (row i, column i + offset) and -1 elsewhere, computed chunk_size rows at a time."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, offset: int, chunk_size: int):
        total = q.new_zeros(())
        for start in range(0, q.shape[0], chunk_size):
            stop = min(start + chunk_size, q.shape[0])
            u = torch.mm(q[start:stop], k.T).mul_(scale).add_(bias).neg_()  # z = -1 everywhere ...
            rows = torch.arange(stop - start, device=q.device)
            u[rows, rows + start + offset] *= -1  # ... but +1 on the targets
            total = total - torch.nn.functional.logsigmoid(u).sum()
            del u
        ctx.save_for_backward(q, k, scale, bias)
        ctx.offset, ctx.chunk_size = offset, chunk_size
        return total

    @staticmethod
    def backward(ctx, grad_total):
        q, k, scale, bias = ctx.saved_tensors
        offset, chunk_size = ctx.offset, ctx.chunk_size
        dq, dk = torch.empty_like(q), torch.zeros_like(k)
        dscale, dbias = scale.new_zeros(()), bias.new_zeros(())
        for start in range(0, q.shape[0], chunk_size):
            stop = min(start + chunk_size, q.shape[0])
            sims = q[start:stop] @ k.T
            rows = torch.arange(stop - start, device=q.device)
            # d/dl of -logsigmoid(z l) is -z * sigmoid(-z l); with z = -1: sigmoid(l), on targets: sigmoid(l) - 1
            g = torch.mul(sims, scale).add_(bias).sigmoid_()
            g[rows, rows + start + offset] -= 1
            g *= grad_total
            dscale += torch.dot(g.view(-1), sims.view(-1))
            dbias += g.sum()
            g *= scale
            dq[start:stop] = g @ k
            dk += g.T @ q[start:stop]
            del sims, g
        return dq, dk, dscale.reshape(scale.shape), dbias.reshape(bias.shape), None, None


def chunked_sigmoid_loss(
    q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, offset: int, chunk_size: int
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss summed over all pairs of ``q`` rows and ``k`` columns, with
    O(chunk_size x columns) memory. Shape: q (R, D), k (C, D), scale and bias scalars -> scalar."""
    return _ChunkedSigmoid.apply(q, k, scale, bias, offset, chunk_size)
