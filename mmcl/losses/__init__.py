"""Contrastive losses, registered by name (each a :class:`ContrastiveLoss` that declares what it
needs). Importing this package registers all of them."""

from ..models.momentum import momentum_update  # re-exported: it lived here before
from .base import DEFAULT_LOSS, LOSSES, ContrastiveLoss, create_loss, list_losses, register_loss
from .cluster_infonce import ClusterGuidedInfoNCE
from .dcl import DCLLoss, DCLWLoss
from .densecl import DenseCLLoss
from .hcl import HCLLoss
from .infonce import InfoNCELoss
from .moco import MoCoLoss
from .ntxent import NTXentLoss
from .siglip import SigLipLoss
from .supcon import SupConLoss
from .triplet import TripletLoss

__all__ = [
    "DEFAULT_LOSS",
    "LOSSES",
    "ClusterGuidedInfoNCE",
    "ContrastiveLoss",
    "DCLLoss",
    "DCLWLoss",
    "DenseCLLoss",
    "HCLLoss",
    "InfoNCELoss",
    "MoCoLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SupConLoss",
    "TripletLoss",
    "create_loss",
    "list_losses",
    "momentum_update",
    "register_loss",
]
