"""Cross-modal cluster-guided negatives (mmcl's signature feature; work in progress, see issue #5).

- :class:`SharedSpaceCentroids`: one set of centroids for image AND text embeddings, updated
  online (ClusterNS-style momentum k-means with a warm-up gate), identical on every rank.
- :class:`mmcl.losses.ClusterGuidedInfoNCE` (``loss.name: cluster_infonce``) uses them to mask
  likely false negatives and to up-weight hard negatives from neighbouring clusters.
"""

from .clusters import SharedSpaceCentroids

__all__ = ["SharedSpaceCentroids"]
