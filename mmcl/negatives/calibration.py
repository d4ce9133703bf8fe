"""Calibrated negative weighting: mmcl's formulation of "negative sampling calibration with
adaptive weighting".

A small MLP reads four detached similarities of a pair of samples (i, j):

    max(cos(img_i, txt_j), cos(img_j, txt_i)), min(...), cos(img_i, img_j), cos(txt_i, txt_j)

(symmetric in i and j, so both loss directions see the same number) and predicts ``p_ij``, the
probability that the pair is actually aligned. It is trained with binary cross-entropy on its
own signal, never on the contrastive loss:

- ``signal="clusters"``: the target is 1 when BOTH modalities put i and j in the same
  shared-space cluster (``cid(img_i) == cid(img_j)`` and ``cid(txt_i) == cid(txt_j)``);
- ``signal="text_similarity"`` / ``"image_similarity"``: the target is 1 when the two captions
  (images) are near-duplicates, cosine >= ``similarity_threshold`` (0.9). The similarity is also
  one of the MLP's inputs, so the MLP learns a smoothed, calibrated version of that threshold,
  refined by the other three similarities.

The contrastive loss then weights each negative by ``w_ij = max(1 - p_ij, min_weight)``,
renormalised so that a row's negative weights average 1, and adds ``log w_ij`` to the logit
(log-space weighted InfoNCE). The positive keeps weight 1 and ``p`` is detached, so no gradient
flows from the contrastive loss into the MLP or through the weights into the encoders.

The MLP has its own Adam optimiser and takes one step per training batch on the pairs gathered
from all ranks, so every rank holds the same MLP. Its weights and optimiser state are module
state and travel with the loss's ``state_dict`` (and so with checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIGNALS = ("clusters", "text_similarity", "image_similarity")


def pair_features(img: torch.Tensor, txt: torch.Tensor, all_img: torch.Tensor, all_txt: torch.Tensor) -> torch.Tensor:
    """(n, N, 4) detached similarity features of rows ``img``/``txt`` against all samples."""
    img, txt, all_img, all_txt = (x.detach().float() for x in (img, txt, all_img, all_txt))
    cross_a = img @ all_txt.T  # cos(img_i, txt_j)
    cross_b = txt @ all_img.T  # cos(txt_i, img_j) = cos(img_j, txt_i)
    return torch.stack(
        [torch.maximum(cross_a, cross_b), torch.minimum(cross_a, cross_b), img @ all_img.T, txt @ all_txt.T], -1
    )


class NegativeCalibrator(nn.Module):
    """Args:
    hidden: width of the two hidden layers.
    lr: the MLP's own Adam learning rate.
    min_weight: the smallest weight a negative can get (keeps ``log w`` finite).
    prior: the initial P(aligned) of every pair (output bias), before the MLP has learnt anything.
    similarity_threshold: the near-duplicate cosine for the similarity signals.
    signal: what the MLP learns to predict (see module doc).
    """

    def __init__(
        self,
        hidden: int = 32,
        lr: float = 5e-3,
        min_weight: float = 0.05,
        signal: str = "clusters",
        prior: float = 0.02,
        similarity_threshold: float = 0.9,
    ):
        super().__init__()
        if signal not in SIGNALS:
            raise ValueError(f"calibration signal must be one of {SIGNALS}, got {signal!r}")
        if not 0 < min_weight <= 1:
            raise ValueError(f"min_weight must be in (0, 1], got {min_weight}")
        self.signal, self.min_weight, self.similarity_threshold = signal, min_weight, similarity_threshold
        gen = torch.Generator().manual_seed(0)  # the same init on every rank, whatever the global seed
        self.mlp = nn.Sequential(
            nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        with torch.no_grad():
            for p in self.mlp.parameters():
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / max(1, p.shape[-1]) ** 0.5)
            # start from the prior that a pair is a true negative: aligned pairs are rare in a batch
            self.mlp[-1].bias.fill_(float(torch.logit(torch.tensor(prior))))
        for p in self.mlp.parameters():
            p.requires_grad_(False)  # the trainer's optimiser and the contrastive loss never touch it
        self.opt = torch.optim.Adam(self.mlp.parameters(), lr=lr)
        self.register_buffer("fit_steps", torch.zeros((), dtype=torch.long))
        self.last_fit_loss = float("nan")

    def get_extra_state(self) -> dict:
        return {"optimizer": self.opt.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        if state and state.get("optimizer"):
            self.opt.load_state_dict(state["optimizer"])

    def _follow(self, device: torch.device) -> None:
        """Move to the embeddings' device (the trainer does not move losses); Adam's state moves too."""
        if self.fit_steps.device != device:
            state = self.opt.state_dict()
            self.to(device)
            self.opt.load_state_dict(state)  # re-created on the parameters' new device

    @torch.no_grad()
    def targets(self, features: torch.Tensor, ids_img: torch.Tensor, ids_txt: torch.Tensor) -> torch.Tensor:
        """(N, N) 0/1 training targets for all gathered pairs, from :attr:`signal`.
        ``features``: :func:`pair_features` of all samples against all; ``ids_*``: cluster ids."""
        if self.signal == "clusters":
            return (ids_img[:, None] == ids_img[None, :]) & (ids_txt[:, None] == ids_txt[None, :])
        column = 3 if self.signal == "text_similarity" else 2
        return features[..., column] >= self.similarity_threshold

    @torch.no_grad()
    def probability(self, features: torch.Tensor) -> torch.Tensor:
        """P(aligned) for each pair's features (..., 4)."""
        self._follow(features.device)
        return torch.sigmoid(self.mlp(features.float()).squeeze(-1))

    def fit(self, features: torch.Tensor, targets: torch.Tensor) -> float:
        """One Adam step of BCE on (pairs, 4) features and 0/1 targets; returns the BCE."""
        self._follow(features.device)
        with torch.enable_grad():
            params = list(self.mlp.parameters())
            for p in params:
                p.requires_grad_(True)
            logit = self.mlp(features.detach().float()).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit, targets.float())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            for p in params:
                p.requires_grad_(False)
                p.grad = None
        self.fit_steps += 1
        self.last_fit_loss = float(loss.detach())
        return self.last_fit_loss

    def log_weights(self, prob: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """``log w`` for (n, N) pair probabilities: 0 on the positives; on each row's negatives
        ``w = max(1 - p, min_weight)`` renormalised to mean 1."""
        w = (1 - prob).clamp(min=self.min_weight).masked_fill(positives, 0.0)
        n_neg = (~positives).sum(1, keepdim=True).clamp(min=1)
        w = w * n_neg / w.sum(1, keepdim=True).clamp(min=1e-12)
        return torch.where(positives, torch.zeros_like(w), w.clamp(min=1e-12).log())
