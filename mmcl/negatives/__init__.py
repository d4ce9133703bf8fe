"""Cross-modal cluster-guided negatives (mmcl's signature feature).

- :class:`SharedSpaceCentroids`: one set of centroids for image AND text embeddings, updated
  online (ClusterNS-style momentum k-means with a warm-up gate), identical on every rank.
- :class:`mmcl.losses.ClusterGuidedInfoNCE` (``loss.name: cluster_infonce``) uses them to mask
  likely false negatives and to up-weight hard negatives from neighbouring clusters.
- :class:`ClusterBatchSampler` (``data.sampler: clusters``) fills stretches of each epoch from
  neighbouring clusters, so hard negatives share a batch.
- :class:`CaptionEditBatchSampler` (``data.sampler: caption_edits``) puts each caption beside a
  training caption one minimal edit away: compositional hard negatives in the batch, at no extra cost.
- :func:`caption_keys`: keys of normalised captions; equal keys are certain false negatives
  (``duplicate_captions: mask`` or ``positive``). :func:`caption_words` / :func:`contained`: one
  caption's words within another's, in order, a likely false negative (``caption_match: contained``).
- :class:`NegativeCalibrator`: an auxiliary MLP that estimates, per negative pair, the
  probability that the pair is actually aligned; ``weighting: calibrated`` down-weights those.
"""

from ..data.samplers import CaptionEditBatchSampler, ClusterBatchSampler  # batch order is a data concern
from .calibration import NegativeCalibrator, pair_features
from .clusters import SharedSpaceCentroids
from .duplicates import caption_keys, caption_words, contained

__all__ = [
    "ClusterBatchSampler",
    "NegativeCalibrator",
    "SharedSpaceCentroids",
    "CaptionEditBatchSampler",
    "caption_keys",
    "caption_words",
    "contained",
    "pair_features",
]
