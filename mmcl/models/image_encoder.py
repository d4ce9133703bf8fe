"""Image-image models: one vision tower for two augmented views, or two towers for paired image
modalities, each with a projection head, and optionally a MoCo momentum key encoder."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..recipe import ModelConfig
from .heads import projection_head
from .momentum import momentum_update
from .pretrained import PretrainedMixin
from .vision import TimmVisionTower


@dataclass
class ImageEncoderOutput:
    """embeds: (B, D) normalised embeddings of the first images (MoCo: the queries).
    embeds2: (B, D) of the second images or views; with a momentum encoder these are its keys
    (no gradient). logit_scale / logit_bias: as in :class:`~mmcl.models.DualEncoderOutput`, used by
    cross-modal losses (InfoNCE, SigLIP, cluster-guided) between two image modalities."""

    embeds: torch.Tensor
    embeds2: torch.Tensor
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor | None = None
    # with a dense head (model.dense): (B, S, D) dense-head outputs at the S backbone locations of the
    # first and second images, and (B, S, C) their backbone features (what DenseCL matches on)
    dense: torch.Tensor | None = None
    dense2: torch.Tensor | None = None
    feature_map: torch.Tensor | None = None
    feature_map2: torch.Tensor | None = None


class ImageEncoder(PretrainedMixin, nn.Module):
    """Vision towers only (``model.kind: image_image``).

    - One tower (``vision2`` unset): SimCLR / MoCo / SupCon on two views of each image, or a shared
      (siamese) tower for two image modalities.
    - Two towers (``vision2`` set, same or different timm architectures): paired modalities such as
      sketch/photo or RGB/depth; each tower has its own head.
    - ``momentum`` set: a key encoder, an EMA copy of the second branch (tower + head) that encodes
      the second view without gradient (MoCo); :meth:`momentum_update` runs after every optimizer step.
    - ``dense`` set: a dense head (DenseCL's 1x1-conv MLP, i.e. a Linear-ReLU-Linear applied at every
      location of the backbone's feature map) next to the global head; the output then carries the
      dense embeddings and backbone features of both branches for a dense loss (``densecl``).

    ``encode_image`` / ``encode_image2`` give the normalised head outputs (retrieval between the two
    modalities); ``features`` gives the first tower's pooled backbone features, which is what
    linear probes and kNN read (the head is discarded after pre-training, as in SimCLR and MoCo).

    Example:
        >>> recipe = mmcl.load_recipe("recipes/simclr-quickstart.yaml")
        >>> model = mmcl.create_model(recipe.model)
        >>> out = model(view1, view2)            # out.embeds, out.embeds2: (B, embed_dim)
    """

    kind = "image_image"

    def __init__(self, cfg: ModelConfig, vision: TimmVisionTower, vision2: TimmVisionTower | None = None):
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.image_proj = projection_head(vision.num_features, cfg.embed_dim, cfg.head)
        self.vision2 = vision2
        self.image2_proj = None if vision2 is None else projection_head(vision2.num_features, cfg.embed_dim, cfg.head)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.logit_bias = (
            None if cfg.logit_bias_init is None else nn.Parameter(torch.tensor(float(cfg.logit_bias_init)))
        )
        self.dense_proj = self.dense2_proj = None
        if cfg.dense:
            self.dense_proj = projection_head(vision.num_features, cfg.embed_dim, "mocov2")
            if vision2 is not None:
                self.dense2_proj = projection_head(vision2.num_features, cfg.embed_dim, "mocov2")
        self.key_encoder = None
        if cfg.momentum is not None:
            parts = dict(zip(("vision", "proj", "dense"), self._branch2()))
            self.key_encoder = nn.ModuleDict({k: copy.deepcopy(m) for k, m in parts.items() if m is not None})
            self.key_encoder.requires_grad_(False)

    def _branch2(self) -> tuple[nn.Module, nn.Module, nn.Module | None]:
        """(tower, head, dense head) that encode the second images."""
        if self.vision2 is None:
            return self.vision, self.image_proj, self.dense_proj
        return self.vision2, self.image2_proj, self.dense2_proj

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of the first tower, (B, num_features), not normalised."""
        return self.vision(images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.image_proj(self.vision(images))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_image2(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The second modality through its own tower (or the shared one)."""
        tower, head, _ = self._branch2()
        x = head(tower(images))
        return F.normalize(x, dim=-1) if normalize else x

    @staticmethod
    def _dense_branch(tower, head, dense_head, images):
        """(normalised global embedding, normalised dense embeddings, backbone features per location)."""
        fmap = tower.forward_map(images)
        feats, _ = tower.tokens(fmap)
        return F.normalize(head(tower.pool(fmap)), dim=-1), F.normalize(dense_head(feats), dim=-1), feats

    def forward(self, images: torch.Tensor, images2: torch.Tensor) -> ImageEncoderOutput:
        scale, bias = self.logit_scale.exp(), self.logit_bias
        enc = self.key_encoder  # with a key encoder the second images are keys: no gradient
        if enc is None:
            tower2, head2, dense2_head = self._branch2()
        else:
            tower2, head2, dense2_head = enc["vision"], enc["proj"], enc["dense"] if "dense" in enc else None
        if self.dense_proj is not None:
            z, dense, fmap = self._dense_branch(self.vision, self.image_proj, self.dense_proj, images)
            with torch.no_grad() if enc is not None else nullcontext():
                z2, dense2, fmap2 = self._dense_branch(tower2, head2, dense2_head, images2)
            return ImageEncoderOutput(z, z2, scale, bias, dense, dense2, fmap, fmap2)
        with torch.no_grad() if enc is not None else nullcontext():
            embeds2 = F.normalize(head2(tower2(images2)), dim=-1)
        return ImageEncoderOutput(self.encode_image(images), embeds2, scale, bias)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key encoder <- m * key encoder + (1 - m) * second branch (no-op without a key encoder)."""
        if self.key_encoder is None:
            return
        for key, online in zip(("vision", "proj", "dense"), self._branch2()):
            if online is not None:
                momentum_update(self.key_encoder[key], online, self.cfg.momentum)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, math.log(self.cfg.logit_scale_max))

    def no_weight_decay_names(self) -> set[str]:
        names = {"logit_scale", "logit_bias"} | {f"vision.{n}" for n in self.vision.no_weight_decay_names()}
        if self.vision2 is not None:
            names |= {f"vision2.{n}" for n in self.vision2.no_weight_decay_names()}
        return names
