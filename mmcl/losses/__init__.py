"""Contrastive losses, registered by name. Importing this package registers all of them."""

from .base import LOSSES, create_loss, list_losses, register_loss
from .infonce import InfoNCELoss

__all__ = ["LOSSES", "InfoNCELoss", "create_loss", "list_losses", "register_loss"]
