"""DMaskingNAS (FBNetV2): channel masking, resolution subsampling, Gumbel supernet,
effective-shape cost, derivation of plain arch defs. See :mod:`.supernet`."""

from .choices import ChannelSpace, Choice, gumbel_weights
from .loss import CostLoss
from .supernet import SEARCH_OPS, Supernet, build_masked_candidate, build_supernet

__all__ = [
    "ChannelSpace",
    "Choice",
    "CostLoss",
    "SEARCH_OPS",
    "Supernet",
    "build_masked_candidate",
    "build_supernet",
    "gumbel_weights",
]
