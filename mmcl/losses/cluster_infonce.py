"""Cluster-guided InfoNCE: symmetric InfoNCE whose negatives are shaped by clusters of BOTH
modalities' embeddings in the shared space (mmcl's formulation, after ClusterNS and CM-CGNS; see
``../shared/METHODS.md`` and :mod:`mmcl.negatives.clusters`).

Once the centroids have started (warm-up gate), with ``cid(x)`` the cluster of an embedding:

- **False negatives** (``false_negatives="mask"``): a pair (i, j != i) with
  ``cid(image_i) == cid(text_j)`` is a likely match, not a negative. Its logit is set to -inf in
  both directions; the positive is always kept. ``false_negatives="margin"`` masks them too and
  adds ClusterNS's bidirectional margin loss on them, ``margin_weight * mean(relu(d + alpha) +
  relu(-d - beta))`` with ``d = cos(x_i, y_j) - cos(x_i, y_i)`` over the masked pairs of both
  directions: a likely match is kept between ``beta`` and ``alpha`` below its row's positive.
- **Hard negatives** (``hard_negatives=n``, ``hard_log_weight=a``): a pair whose column lies in one
  of the ``n`` clusters nearest to the row's own cluster gets ``+a`` added to its logit, i.e.
  weight ``e^a`` in the softmax denominator.
- **Centroid columns** (``centroid_columns=True``): each row also sees, as one extra negative
  column, its second-nearest centroid (detached), scaled like the other logits, plus ``a``
  (ClusterNS's hard negative).
- **Duplicate captions** (``duplicate_captions="mask"``): a pair whose two captions are the same
  after normalisation (:mod:`mmcl.negatives.duplicates`) is a certain false negative and is masked
  in both directions, from the first step (no clusters needed); ``duplicate_captions="positive"``
  counts such pairs as positives instead: each row's target spreads evenly over its own pair and
  its duplicates (UniCL's multi-positive target, Yang et al. 2022, with captions as the labels).
  The trainer hands the loss each batch's caption keys (``batch_caption_keys``).
  ``caption_match="contained"`` widens "duplicate" to containment: (image i, caption j) is a
  false negative when every word of caption j appears, in order, in caption i ("a red circle" in
  "a small red circle at the top left"). The relation is one-way, so the two directions get
  different masks; the trainer hands the loss each caption's word keys
  (``batch_caption_words``).
- **Calibrated weighting** (``weighting="calibrated"``): each negative's logit gets ``log w_ij``,
  where ``w_ij`` falls with an auxiliary MLP's detached estimate that the pair is actually
  aligned (:mod:`mmcl.negatives.calibration`). The MLP learns from the clusters of both
  modalities or from near-duplicate captions/images, never from the contrastive loss.

With every policy off, or before the gate opens (and no duplicate captions), the loss equals
:class:`InfoNCELoss`. The centroids are updated after each training-mode call, from the features
gathered over all ranks, so every rank holds the same centroids. ``last_stats`` reports cluster
health: how often an image shares a cluster with its own caption, how many pairs were masked, and
the number of clusters in use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..negatives.calibration import NegativeCalibrator, pair_features
from ..negatives.clusters import SharedSpaceCentroids
from ..negatives.duplicates import contained, duplicate_pairs
from ._checks import check_rank_world
from ._distributed import cross_modal_inputs, gather_no_grad, gather_text_negatives, gather_with_grad
from .base import ContrastiveLoss, register_loss


def multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy against a target spread evenly over the row's positives.
    Masked (-inf) logits off the positives contribute nothing (no 0 * -inf)."""
    if positives.shape[1] < logits.shape[1]:  # extra negative columns (centroids, hard-negative captions)
        positives = F.pad(positives, (0, logits.shape[1] - positives.shape[1]))
    logp = logits.log_softmax(dim=1)
    target = positives.to(logits.dtype) / positives.sum(1, keepdim=True)
    return -torch.where(positives, target * logp, torch.zeros_like(logp)).sum(1).mean()


@register_loss("cluster_infonce")
class ClusterGuidedInfoNCE(ContrastiveLoss):
    """Args:
    k, momentum, gate: the shared-space centroids (ClusterNS defaults 128, 1e-3, 0.4).
    mode: ``"online"`` (momentum update every step) or ``"periodic"`` (k-means over an embedding
        bank of ``bank_size`` rows every ``recluster_every`` steps).
    false_negatives: ``"none"`` (default), ``"mask"`` or ``"margin"`` (mask + bidirectional margin).
        The default was ``"mask"`` until the evidence benchmark (docs/negatives.md)
        showed same-cluster masking removing mostly true negatives at practical ``k``.
    margin_alpha, margin_beta, margin_weight: the margin loss (ClusterNS: 0, 0.3, 1e-3).
    hard_negatives: how many neighbouring clusters count as hard (0: off).
    hard_log_weight: the log-weight added to hard-negative logits (0: off).
    centroid_columns: add each row's second-nearest centroid as an extra negative column.
    weighting: ``"none"`` (default) or ``"calibrated"`` (MLP-weighted negatives).
    duplicate_captions: ``"none"`` (default), ``"mask"`` (drop the pairs whose captions are
        duplicates from the denominators) or ``"positive"`` (count them as positives too). Set
        ``batch_caption_keys`` before each call; the trainer does.
    caption_match: which captions count as duplicates: ``"equal"`` (default; after normalisation)
        or ``"contained"`` (caption j's words appear in caption i in order: (image i, caption j)
        is flagged). ``"contained"`` reads ``batch_caption_words``
        (:func:`mmcl.negatives.caption_words`) instead of the keys.
    calibration: options of :class:`~mmcl.negatives.calibration.NegativeCalibrator`
        (``hidden``, ``lr``, ``min_weight``, ``signal``: clusters | text_similarity |
        image_similarity, ``similarity_threshold``).
    rank, world_size: override what ``torch.distributed`` reports (for tests).

    Shape:
        image_features, text_features: (B, D), L2-normalised. logit_scale: scalar. Returns a scalar.
    """

    pairing = "cross_modal"
    takes_text_negatives = True  # NegCLIP-style hard-negative captions (data.negatives_key)
    provides_clusters = True  # sample_table(): data.sampler: clusters orders epochs by it

    def __init__(
        self,
        k: int = 128,
        momentum: float = 1e-3,
        gate: float = 0.4,
        false_negatives: str = "none",
        margin_alpha: float = 0.0,
        margin_beta: float = 0.3,
        margin_weight: float = 1e-3,
        hard_negatives: int = 0,
        hard_log_weight: float = 0.0,
        centroid_columns: bool = False,
        mode: str = "online",
        bank_size: int = 4096,
        recluster_every: int = 100,
        weighting: str = "none",
        calibration: dict | None = None,
        duplicate_captions: str = "none",
        caption_match: str = "equal",
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if false_negatives not in ("mask", "margin", "none"):
            raise ValueError(f"false_negatives must be 'mask', 'margin' or 'none', got {false_negatives!r}")
        if hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {hard_negatives}")
        if weighting not in ("none", "calibrated"):
            raise ValueError(f"weighting must be 'none' or 'calibrated', got {weighting!r}")
        if duplicate_captions not in ("mask", "positive", "none"):
            raise ValueError(f"duplicate_captions must be 'mask', 'positive' or 'none', got {duplicate_captions!r}")
        if caption_match not in ("equal", "contained"):
            raise ValueError(f"caption_match must be 'equal' or 'contained', got {caption_match!r}")
        check_rank_world(rank, world_size)
        self.calibrator = NegativeCalibrator(**(calibration or {})) if weighting == "calibrated" else None
        self.centroids = SharedSpaceCentroids(k, momentum, gate, mode, bank_size, recluster_every)
        self.batch_ids: torch.Tensor | None = None  # the trainer sets this batch's sample ids (bank)
        # the trainer sets this batch's caption keys (mmcl.negatives.caption_keys) for duplicate masking
        self.batch_caption_keys: torch.Tensor | None = None
        # with caption_match="contained": each caption's word keys (mmcl.negatives.caption_words)
        self.batch_caption_words: torch.Tensor | None = None
        self.duplicate_captions, self.caption_match = duplicate_captions, caption_match
        # per sample id: the cluster of its image at its last visit (-1: not seen since clustering
        # started); data.sampler: clusters orders each epoch by it. Grows with the largest id.
        self.register_buffer("sample_clusters", torch.zeros(0, dtype=torch.long))
        self.false_negatives, self.hard_negatives = false_negatives, hard_negatives
        self.margin = (margin_alpha, margin_beta, margin_weight)
        self.hard_log_weight, self.centroid_columns = hard_log_weight, centroid_columns
        self._rank, self._world_size = rank, world_size
        self.last_stats: dict[str, float] = {}
        self._calibration_stats: dict[str, float] = {}

    def _shape(self, logits, row_ids, col_ids, positives, neighbours):
        """Apply the policies to one direction's (rows x all columns) logits."""
        if self.false_negatives in ("mask", "margin"):
            same = (row_ids[:, None] == col_ids[None, :]) & ~positives
            logits = logits.masked_fill(same, float("-inf"))
        if neighbours is not None:
            hard = (neighbours[row_ids][:, :, None] == col_ids[None, None, :]).any(1) & ~positives
            logits = logits + self.hard_log_weight * hard.to(logits.dtype)
        return logits

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, text_negatives=None):
        """``text_negatives``: hard-negative caption embeddings (NegCLIP, ``data.negatives_key``),
        (M, D) per rank, M any; every image also meets those of the whole global batch as extra
        columns of its softmax, after the policies (they are never masked or re-weighted)."""
        img, txt, rank, sizes = cross_modal_inputs(image_features, text_features, self._rank, self._world_size)
        all_img, all_txt = gather_with_grad(img, sizes), gather_with_grad(txt, sizes)
        scale = logit_scale.to(img.dtype)
        neg = None if text_negatives is None else gather_text_negatives(text_negatives, txt, len(sizes))
        offset, n = sum(sizes[:rank]), img.shape[0]
        logits_i = scale * img @ all_txt.T
        logits_t = scale * txt @ all_img.T
        if logit_bias is not None:
            logits_i, logits_t = logits_i + logit_bias, logits_t + logit_bias
        labels = torch.arange(n, device=img.device) + offset
        ids = self.batch_ids
        if ids is not None and len(sizes) > 1:
            ids = gather_no_grad(ids.to(img.device), sizes)
        positives = torch.zeros(n, sum(sizes), dtype=torch.bool, device=img.device)
        positives[torch.arange(n), labels] = True
        diagonal = positives
        # duplicate-caption pairs per direction: rows are this rank's images (dup_i) or captions (dup_t)
        dup_i, dup_t = self._duplicates(sizes, offset, n, positives)
        multi_positive = dup_i is not None and self.duplicate_captions == "positive"
        if multi_positive:  # more positives, which no other policy touches
            positives_i, positives_t = positives | dup_i, positives | dup_t
            positives = positives_i | positives_t
        elif dup_i is not None:
            logits_i = logits_i.masked_fill(dup_i, float("-inf"))
            logits_t = logits_t.masked_fill(dup_t, float("-inf"))
        if not self.centroids.started and self.training:
            self.centroids.observe(all_img, all_txt, ids)  # the gate may open on this very batch
            observed = True
        else:
            observed = False
        if self.centroids.started:
            c = self.centroids
            ids_img, ids_txt = c.assign(all_img.detach()), c.assign(all_txt.detach())
            use_hard = self.hard_negatives > 0 and self.hard_log_weight != 0
            neighbours = c.neighbours(self.hard_negatives).to(img.device) if use_hard else None
            rows = slice(offset, offset + n)
            logits_i = self._shape(logits_i, ids_img[rows], ids_txt, positives, neighbours)
            logits_t = self._shape(logits_t, ids_txt[rows], ids_img, positives, neighbours)
            if self.calibrator is not None:
                log_w = self._calibrated(img, txt, all_img, all_txt, ids_img, ids_txt, positives, rows)
                logits_i, logits_t = logits_i + log_w, logits_t + log_w
            if self.centroid_columns:
                logits_i = torch.cat([logits_i, self._centroid_column(img, scale)], 1)
                logits_t = torch.cat([logits_t, self._centroid_column(txt, scale)], 1)
            self.last_stats = {
                "cluster_agreement": float((ids_img == ids_txt).float().mean()),
                "masked_pairs": float(torch.isinf(logits_i).sum()) / max(1, n),
                "clusters_used": float(torch.unique(torch.cat([ids_img, ids_txt])).numel()),
                **self._calibration_stats,
            }
        if dup_i is not None:
            self.last_stats["duplicate_pairs"] = float(dup_i.sum()) / max(1, n)
        if neg is not None:  # NegCLIP's extra columns, image -> text only
            extra = scale * img @ neg.T
            logits_i = torch.cat([logits_i, extra if logit_bias is None else extra + logit_bias], 1)
        if multi_positive:
            loss = (multi_positive_ce(logits_i, positives_i) + multi_positive_ce(logits_t, positives_t)) / 2
        else:
            loss = (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2
        margin_term = None
        if self.false_negatives == "margin" and self.centroids.started:
            margin_term = self._margin(img, txt, all_img, all_txt, ids_img, ids_txt, rows, diagonal, len(sizes))
        if self.training and self.centroids.started:
            if ids is not None:
                self._record(ids, ids_img)
            if not observed:
                before = self.centroids.centroids.clone() if self.centroids.bank is not None else None
                self.centroids.observe(all_img, all_txt, ids)
                if before is not None and not torch.equal(before, self.centroids.centroids):
                    self._remap(before)
        self.batch_ids = self.batch_caption_keys = self.batch_caption_words = None
        # Weight by this rank's share so that DDP's mean over ranks is the global mean.
        loss = loss * (len(sizes) * n / sum(sizes))
        return loss if margin_term is None else loss + margin_term

    @property
    def caption_inputs(self) -> tuple[str, str] | None:
        """(the collate's batch key, this loss's attribute) of what each call needs about the
        captions, or None: ``("caption_key", "batch_caption_keys")`` for equal captions,
        ``("caption_words", "batch_caption_words")`` for contained ones."""
        if self.duplicate_captions == "none":
            return None
        if self.caption_match == "contained":
            return "caption_words", "batch_caption_words"
        return "caption_key", "batch_caption_keys"

    def check_recipe(self, recipe) -> None:
        if recipe.model.kind == "image_image" and self.duplicate_captions != "none":
            raise ConfigError(
                "loss.kwargs.duplicate_captions compares captions, and an image_image model has none; "
                "valid choice here: none"
            )

    @property
    def batch_inputs(self) -> tuple[str, ...]:
        """Sample ids (``index``: the bank and the cluster table) and, when duplicate captions are
        handled, the captions' keys or word keys."""
        return ("index",) if self.caption_inputs is None else ("index", self.caption_inputs[0])

    def set_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        self.batch_ids = inputs.get("index")
        if self.caption_inputs is not None:
            key, attr = self.caption_inputs
            setattr(self, attr, inputs.get(key))

    def _duplicates(self, sizes, offset, n, positives):
        """This rank's duplicate-caption pairs, (images x all captions) and (captions x all images),
        or (None, None) when the policy is off."""
        if self.caption_inputs is None:
            return None, None
        contained_mode = self.caption_match == "contained"
        _, attr = self.caption_inputs
        make = "caption_words" if contained_mode else "caption_keys"
        keys = getattr(self, attr)
        if keys is None:
            raise ValueError(
                f"duplicate_captions={self.duplicate_captions!r} (caption_match={self.caption_match!r}) needs the "
                f"batch's {attr[6:].replace('_', ' ')}: set loss.{attr} = mmcl.negatives.{make}(captions) before "
                "the call (the trainer does this)"
            )
        keys = keys.to(positives.device)
        if keys.shape[0] != n or keys.dim() != (2 if contained_mode else 1):
            want = "(batch, words)" if contained_mode else "(batch,)"
            raise ValueError(f"{attr} must be {want} for a batch of {n}, got shape {tuple(keys.shape)}")
        all_keys = gather_no_grad(keys, sizes)
        mine = all_keys[offset : offset + n]
        if not contained_mode:
            dup = duplicate_pairs(mine, all_keys, positives)
            return dup, dup
        # image i (row) and caption j (column): caption j's words within caption i's; for the caption
        # rows, the other way round (in one process, the same matrix transposed)
        within = contained(mine, all_keys)
        within_t = within.T if len(sizes) == 1 else contained(all_keys, mine).T
        return within & ~positives, within_t & ~positives

    @torch.no_grad()
    def _record(self, ids: torch.Tensor, clusters: torch.Tensor) -> None:
        ids = ids.to(self.sample_clusters.device).long()
        need = int(ids.max()) + 1 if ids.numel() else 0
        if need > self.sample_clusters.numel():
            grown = torch.full((need,), -1, dtype=torch.long, device=self.sample_clusters.device)
            grown[: self.sample_clusters.numel()] = self.sample_clusters
            self.sample_clusters = grown
        keep = ids >= 0
        self.sample_clusters[ids[keep]] = clusters.to(self.sample_clusters.device)[keep]

    @torch.no_grad()
    def _remap(self, old_centroids: torch.Tensor) -> None:
        """After a re-clustering: carry each recorded sample to the new centroid nearest its old one."""
        table = self.sample_clusters
        if table.numel():
            nearest = (old_centroids @ self.centroids.centroids.T).argmax(1).to(table.device)
            seen = table >= 0
            table[seen] = nearest[table[seen]]

    def sample_table(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(cluster per sample id, centroids), or (None, None) before clustering starts: what
        :class:`mmcl.negatives.ClusterBatchSampler` orders an epoch by."""
        if not self.centroids.started:
            return None, None
        return self.sample_clusters.clone(), self.centroids.centroids.clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "sample_clusters"
        if key in state_dict:  # the table's length is the largest id seen
            self.sample_clusters = torch.empty_like(state_dict[key])
        else:  # a checkpoint from before the table existed
            state_dict[key] = torch.zeros(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _margin(self, img, txt, all_img, all_txt, ids_img, ids_txt, rows, positives, world):
        """This rank's share of the bidirectional margin loss over all ranks' masked pairs."""
        alpha, beta, weight = self.margin
        total, count = img.new_zeros(()), 0
        for x, all_y, rid, cid, all_rid, all_cid in (
            (img, all_txt, ids_img[rows], ids_txt, ids_img, ids_txt),
            (txt, all_img, ids_txt[rows], ids_img, ids_txt, ids_img),
        ):
            sim = x @ all_y.T
            d = sim - sim[positives][:, None]
            cand = (rid[:, None] == cid[None, :]) & ~positives
            total = total + (F.relu(d + alpha) + F.relu(-d - beta))[cand].sum()
            # every rank knows every assignment, so each divides by the same global count
            everywhere = all_rid[:, None] == all_cid[None, :]
            count += int(everywhere.sum() - everywhere.diagonal().sum())
        self.last_stats["margin_pairs"] = float(count)
        # DDP averages the ranks' losses: scale by the world size so the mean is the global mean
        return weight * world * total / max(1, count)

    def _calibrated(self, img, txt, all_img, all_txt, ids_img, ids_txt, positives, rows):
        """``log w`` for this rank's rows; then (training) one MLP step on all gathered pairs."""
        cal = self.calibrator
        # training fits on all gathered pairs: compute them once and take this rank's rows
        every = pair_features(all_img, all_txt, all_img, all_txt) if self.training else None
        feats = every[rows] if every is not None else pair_features(img, txt, all_img, all_txt)
        prob = cal.probability(feats)
        log_w = cal.log_weights(prob, positives).to(img.dtype)
        negatives = ~positives
        self._calibration_stats = {
            "calibrated_p_mean": float(prob[negatives].mean()) if negatives.any() else 0.0,
            "calibrated_w_min": float(log_w[negatives].exp().min()) if negatives.any() else 1.0,
        }
        if every is not None:
            target = cal.targets(every, ids_img, ids_txt)
            off = ~torch.eye(target.shape[0], dtype=torch.bool, device=target.device)
            self._calibration_stats["calibration_bce"] = cal.fit(every[off], target[off])
            self._calibration_stats["calibration_target_rate"] = float(target[off].float().mean())
        return log_w

    @torch.no_grad()
    def pair_scores(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        """How the current state judges every (image_i, text_j) pair of unit-norm embeddings:
        ``same_cluster`` (what the mask removes) and, with calibrated weighting, ``p_aligned``.
        Used to score false-negative detection against known truth."""
        if not self.centroids.started:
            raise RuntimeError("the centroids have not started (the warm-up gate never opened)")
        c = self.centroids
        out = {"same_cluster": c.assign(images)[:, None] == c.assign(texts)[None, :]}
        if self.calibrator is not None:
            out["p_aligned"] = self.calibrator.probability(pair_features(images, texts, images, texts))
        return out

    def _centroid_column(self, x, scale):
        """The logit of each row against its second-nearest centroid (detached), plus the hard weight."""
        cents = self.centroids.centroids.to(x.dtype)
        second = (x.detach() @ cents.T).topk(2, dim=1).indices[:, 1]
        return (scale * (x * cents[second]).sum(1) + self.hard_log_weight)[:, None]
