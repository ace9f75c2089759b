"""DMaskingNAS (FBNetV2), the model side: channel masking, resolution subsampling, Gumbel
supernet, effective-shape cost, derivation of plain arch defs. The search loop that trains
it is :mod:`mobile_cv.engine.search`.

* :mod:`.space`: search-space rows -> the supernet's blocks and choices
* :mod:`.choices`, :mod:`.masked`, :mod:`.mixed`: choices and masks, masked blocks (and the
  registry of masked forms), block-type mixtures and resolution search
* :mod:`.supernet`: the supernet (sampling, forward, differentiable cost)
* :mod:`.encode`: plain arch defs <-> choices (``derive_arch``, ``encode``, ``copy_to``)
* :mod:`.budget`: the exact cost table of every option and the budgeted search over it
* :mod:`.loss`: the cost-aware losses
"""

from .choices import ChannelSpace, Choice, gumbel_softmax
from .loss import CostLoss
from .masked import MASKED_BLOCKS, CandidateSpec, SearchBlock, build_masked_candidate, register_masked_block
from .supernet import SEARCH_OPS, Supernet, build_supernet

__all__ = [
    "MASKED_BLOCKS",
    "CandidateSpec",
    "ChannelSpace",
    "Choice",
    "CostLoss",
    "SEARCH_OPS",
    "SearchBlock",
    "Supernet",
    "build_masked_candidate",
    "build_supernet",
    "gumbel_softmax",
    "register_masked_block",
]
