"""DenseCL: MoCo v2 plus a contrastive loss at every location of the backbone's feature map
(Wang et al. 2021, "Dense Contrastive Learning for Self-Supervised Visual Pre-Training")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._checks import check_positive, check_rank_world, check_two_views
from ._distributed import batch_sizes, dist_info, gather_no_grad
from .base import ContrastiveLoss, register_loss
from .moco import MoCoLoss

MATCHES = ("features", "geometry")


def match_locations(query_map: torch.Tensor, key_map: torch.Tensor) -> torch.Tensor:
    """For every query location, the key location whose backbone feature is most similar (cosine).

    Shape: query_map (B, S, C), key_map (B, S', C) -> indices (B, S) into the key locations.
    """
    sim = F.normalize(query_map, dim=-1) @ F.normalize(key_map, dim=-1).transpose(1, 2)
    return sim.argmax(dim=2)


def _square_side(cells: int) -> int:
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"match: geometry and cell_negatives need a square feature map; got {cells} cells")
    return side


def cell_centres(boxes: torch.Tensor, side: int) -> torch.Tensor:
    """Where the centre of every cell of a view's side x side map lies in the source image.

    Shape: boxes (B, 4), each view's crop (x0, y0, x1, y1) as fractions of the source image, with
    x0 > x1 for a flipped view (:class:`mmcl.data.transforms.LocatedCrop`) -> (B, side * side, 2)
    source (x, y), cells in row-major order.
    """
    t = (torch.arange(side, dtype=boxes.dtype, device=boxes.device) + 0.5) / side
    x = boxes[:, 0:1] + t * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, side): column centres
    y = boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])  # (B, side): row centres
    b = boxes.shape[0]
    return torch.stack([x[:, None, :].expand(b, side, side), y[:, :, None].expand(b, side, side)], -1).flatten(1, 2)


def grid_distances(cells: int, device=None) -> torch.Tensor:
    """(S, S) Euclidean distances between the cells of a square side x side map, in cells."""
    side = _square_side(cells)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], -1).to(device=device, dtype=torch.float64)
    return torch.cdist(grid, grid)


def match_by_geometry(
    query_boxes: torch.Tensor, key_boxes: torch.Tensor, query_cells: int, key_cells: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query cell, the key cell whose centre is nearest in the source image, and whether
    the query cell's centre lies inside the key view at all (only those cells have a positive).

    Shape: boxes (B, 4) as in :func:`cell_centres` -> indices (B, S) into the key cells, valid (B, S).
    """
    q = cell_centres(query_boxes, _square_side(query_cells))
    k = cell_centres(key_boxes, _square_side(key_cells))
    idx = torch.cdist(q, k).argmin(dim=2)
    lo = torch.minimum(key_boxes[:, :2], key_boxes[:, 2:])[:, None]
    hi = torch.maximum(key_boxes[:, :2], key_boxes[:, 2:])[:, None]
    return idx, ((q >= lo) & (q <= hi)).all(dim=-1)


@register_loss("densecl")
class DenseCLLoss(ContrastiveLoss):
    """loss = (1 - w) * L_global + w * L_dense, with w = 0 for the first ``warmup_steps`` calls.

    - L_global: MoCo v2 on the pooled embeddings (queries vs momentum keys and a queue of past keys).
    - L_dense: every query location i has as its positive the dense key vector at the key location
      whose *backbone* feature is most similar to location i's (:func:`match_locations`), and as
      negatives a second queue holding the *pooled* dense key vector of past images. Cross-entropy
      over [positive, queue] / temperature, averaged over all query locations.

    ``match: geometry`` (mmcl's variant; the positives of PixPro and VADeR are found the same way)
    pairs locations by where they lie in the image instead: the views know their crop boxes
    (the trainer sets ``batch_boxes`` from a located two-view transform), the positive of query
    cell i is the key cell whose centre is nearest to cell i's in the source image, and cells that
    lie outside the key view have no positive and are left out of the mean. This is exact from the
    first step, where feature similarity says little.

    ``cell_negatives: r`` (mmcl's variant, off by default; PixPro's PixContrast and VADeR also take
    negatives from within the image) adds, as further negatives of query cell i, the key cells of
    the *same* image that lie more than ``r`` cells (Euclidean, in the key map's grid) from i's
    positive. The pooled queue only asks a cell to differ from other images; these ask it to differ
    from the distant parts of its own image too, so the map has to keep what is where.

    The warm-up (DenseCL trains the global loss alone first) matters because the matching reads
    backbone features, which say nothing at random init. It counts calls of this loss, which are
    kept with both queues in ``state_dict()`` and so in every checkpoint.

    Under data parallelism both queues receive the keys of the whole global batch in rank order and
    each rank's dense term is weighted by its share of the global batch, as in :class:`MoCoLoss`, so
    the result equals one process with the whole batch.

    Args:
        queue_size: keys per queue (65536 in the paper).
        temperature: 0.2 for both terms.
        dense_weight: w, the paper's lambda (0.5); 0 gives MoCo v2 on the same model.
        warmup_steps: calls with w = 0 before the dense term switches on.
        match: ``features`` (DenseCL's) or ``geometry`` (crop boxes; see above).
        cell_negatives: ``None`` (DenseCL's) or the radius ``r`` in cells (see above).

    Shape (called by the trainer for a model with ``model.dense: true``):
        query, key (B, D); dense_query, dense_key (B, S, D) dense-head outputs;
        query_map, key_map (B, S, C) backbone features of the query view and of the key encoder.
    """

    pairing = "dense"
    needs_momentum_encoder = True  # keys come from the model's momentum encoder (model.momentum)
    needs_dense_head = True  # dense queries and keys come from the model's dense head (model.dense)
    stats_group = "loss"  # the trainer logs last_stats as loss/global_loss, loss/dense_loss, loss/w

    def __init__(
        self,
        queue_size: int = 65536,
        temperature: float = 0.2,
        dense_weight: float = 0.5,
        warmup_steps: int = 0,
        match: str = "features",
        cell_negatives: float | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        check_positive("temperature", temperature)
        check_rank_world(rank, world_size)
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps}")
        if match not in MATCHES:
            raise ValueError(f"match must be one of {', '.join(MATCHES)}; got {match!r}")
        self.temperature, self.dense_weight, self.warmup_steps = temperature, dense_weight, warmup_steps
        if cell_negatives is not None and (
            isinstance(cell_negatives, bool) or not isinstance(cell_negatives, int | float) or not cell_negatives >= 0
        ):
            raise ValueError(f"cell_negatives must be null (off) or a radius in cells >= 0, got {cell_negatives!r}")
        self.match, self._matched = match, 0.0
        self.cell_negatives = None if cell_negatives is None else float(cell_negatives)
        # match: geometry. The trainer sets ((B, 4), (B, 4)) crop boxes of the query and key views each step
        self.batch_boxes: tuple[torch.Tensor, torch.Tensor] | None = None
        self._rank, self._world_size = rank, world_size
        self.global_term = MoCoLoss(queue_size, temperature, True, rank, world_size)
        self.dense_keys = MoCoLoss(queue_size, temperature, True, rank, world_size)  # only its queue is used
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.last_stats: dict[str, float] = {}

    @property
    def batch_inputs(self) -> tuple[str, ...]:
        """``match: geometry`` pairs cells by the crop boxes of the two views."""
        return ("boxes", "boxes2") if self.match == "geometry" else ()

    def set_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        if self.match == "geometry" and "boxes" in inputs:
            self.batch_boxes = (inputs["boxes"], inputs["boxes2"])

    def check_recipe(self, recipe) -> None:
        d = recipe.data
        if self.match == "geometry" and not (
            d.image2_key is None and d.augment.enabled and d.augment.preset == "simclr"
        ):
            raise ConfigError(
                "loss.kwargs.match: geometry pairs the cells of two crops of one image by their crop boxes: it "
                "needs data.augment.enabled: true with preset: simclr and no data.image2_key (valid matches: "
                "features, geometry)"
            )

    def current_weight(self) -> float:
        """w for the next call."""
        return 0.0 if int(self.calls) < self.warmup_steps else self.dense_weight

    def dense_loss(self, dense_query, dense_key, query_map, key_map) -> torch.Tensor:
        """L_dense of this rank's locations (before the global-batch weighting); enqueues the
        pooled dense keys of the global batch."""
        b, s, _ = dense_query.shape
        if dense_key.shape[0] != b or query_map.shape[:2] != (b, s) or key_map.shape[:2] != dense_key.shape[:2]:
            raise ValueError(
                "expected dense_query (B, S, D), dense_key (B, S', D), query_map (B, S, C), key_map (B, S', C); got "
                + ", ".join(str(tuple(t.shape)) for t in (dense_query, dense_key, query_map, key_map))
            )
        dtype = torch.promote_types(dense_query.dtype, torch.float32)
        q = F.normalize(dense_query.to(dtype), dim=-1)
        k = F.normalize(dense_key.detach().to(dtype), dim=-1)
        if self.match == "geometry":
            idx, valid = self._geometry(b, s, dense_key.shape[1], q.device)
            self._matched = float(valid.double().mean())
        else:
            idx = match_locations(query_map.detach().to(dtype), key_map.detach().to(dtype))
            valid = None
        positives = torch.gather(k, 1, idx.unsqueeze(-1).expand(-1, -1, k.shape[2]))
        logits = [(q * positives).sum(dim=-1, keepdim=True)]
        if int(self.dense_keys.queue_len) > 0:
            logits.append(q @ self.dense_keys.negatives().to(dtype, copy=True).T)
        if self.cell_negatives is not None:  # the key cells of the same image far from the positive
            far = grid_distances(k.shape[1], q.device)[idx] > self.cell_negatives  # (B, S, S')
            logits.append((q @ k.transpose(1, 2)).masked_fill(~far, float("-inf")))
        logits = torch.cat(logits, dim=-1).flatten(0, 1) / self.temperature
        per_cell = F.cross_entropy(logits, torch.zeros(b * s, dtype=torch.long, device=q.device), reduction="none")
        _, world = dist_info(self._rank, self._world_size)
        sizes = batch_sizes(b, world, q.device)
        pooled = F.normalize(dense_key.detach().to(dtype).mean(dim=1), dim=-1)
        self.dense_keys.enqueue(gather_no_grad(pooled, sizes))
        if valid is None:
            return per_cell.mean() * (len(sizes) * b / sum(sizes))
        # the mean over the valid cells of the global batch: each rank's sum over the global count
        # (DDP then averages the ranks' gradients, hence the factor of the world size)
        count = gather_no_grad(valid.sum().to(dtype).view(1), [1] * len(sizes)).sum()
        return (per_cell * valid.flatten().to(dtype)).sum() * len(sizes) / count.clamp_min(1.0)

    def _geometry(self, b: int, s: int, key_cells: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = self.batch_boxes
        if boxes is None:
            raise ValueError(
                "match: geometry needs each view's crop box: a two-view simclr transform "
                "(data.augment.preset: simclr) over one image column; or use match: features"
            )
        qb, kb = (x.to(device=device, dtype=torch.float64) for x in boxes)
        if qb.shape != (b, 4) or kb.shape != (b, 4):
            raise ValueError(f"expected ({b}, 4) crop boxes per view; got {tuple(qb.shape)} and {tuple(kb.shape)}")
        return match_by_geometry(qb, kb, s, key_cells)

    def forward(self, query, key, dense_query, dense_key, query_map, key_map) -> torch.Tensor:
        check_two_views(query, key)
        w = self.current_weight()
        self.calls += 1
        global_loss = self.global_term(query, key)
        dense = self.dense_loss(dense_query, dense_key, query_map, key_map)
        self.last_stats = {"global_loss": float(global_loss.detach()), "dense_loss": float(dense.detach()), "w": w}
        if self.match == "geometry":  # the share of query cells that lie inside their key view
            self.last_stats["matched_cells"] = self._matched
        # the dense term stays in the graph during the warm-up, so every parameter gets a gradient
        return (1.0 - w) * global_loss + w * dense
