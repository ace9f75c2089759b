"""Making a checkpoint fit a model: another classifier or input-channel count adapted, the rest checked."""

from __future__ import annotations

import logging
from typing import Optional

from timm.models import adapt_input_conv
from torch import nn

from mobile_cv.arch.weights import WeightsMismatchError, describe_mismatch

from .hub import StateDict

logger = logging.getLogger(__name__)

CLASSIFIER = "head.conv"  # the builder's classifier module (a 1x1 conv with bias)


def fit_state_dict(model: nn.Module, state_dict: StateDict, source: str) -> StateDict:
    """``state_dict`` made to fit ``model`` where that is meaningful, else an error.

    * A classifier (``head.conv``) for another number of classes is dropped; the
      model keeps its freshly initialized one (logged).
    * A first conv for another number of input channels is adapted with timm's
      ``adapt_input_conv`` (summed for 1 channel, repeated and rescaled otherwise; logged).
    * Anything else that does not fit raises
      :class:`~mobile_cv.arch.weights.WeightsMismatchError` naming the first keys.
    """
    own = model.state_dict()
    out = dict(state_dict)
    weight_key = CLASSIFIER + ".weight"
    if weight_key in out:
        ckpt_classes = out[weight_key].shape[0]
        model_classes = own[weight_key].shape[0] if weight_key in own else 0
        if ckpt_classes != model_classes:
            dropped = sorted(k for k in out if k.startswith(CLASSIFIER + "."))
            for k in dropped:
                del out[k]
            out.update({k: v for k, v in own.items() if k.startswith(CLASSIFIER + ".")})
            logger.info(
                "%s: the checkpoint's classifier has %d classes, the model %d: %s not loaded (the model keeps "
                "its freshly initialized classifier)",
                source,
                ckpt_classes,
                model_classes,
                ", ".join(dropped),
            )
    first_conv = first_conv_key(model)
    if first_conv in out and first_conv in own:
        src, dst = out[first_conv], own[first_conv]
        # only the input-channel dimension differs
        if src.ndim == 4 and src.shape[1] != dst.shape[1] and src[:, :1].shape == dst[:, :1].shape:
            out[first_conv] = adapt_input_conv(dst.shape[1], src, base_chans=src.shape[1])
            logger.info("%s: adapted %s from %d to %d input channels", source, first_conv, src.shape[1], dst.shape[1])
    problem = describe_mismatch(model, out, source)
    if problem:
        raise WeightsMismatchError(problem)
    return out


def first_conv_key(model: nn.Module) -> Optional[str]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name + ".weight"
    return None
