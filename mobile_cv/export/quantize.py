"""int8 ExecuTorch export: PT2E static quantization (XNNPACKQuantizer, symmetric, per-channel
weights) calibrated on real images, then lowered like the fp32 program."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import ExportSettingsError
from .to_executorch import program_bytes, write_bytes


def pt2e_quantizer(calibration: torch.Tensor, batch: int = 32) -> Callable:
    """(model, example) -> quantized exported program (XNNPACK symmetric int8, per-channel weights).

    Calibration runs ``batch`` images at a time through a graph exported with a dynamic batch
    dimension; the converted model is then exported again for the batch of ``example``.
    """

    def quantize(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        two = torch.cat([calibration[:2], calibration[:1]])[:2]  # a batch of 1 would specialise the dimension
        dims = ({0: torch.export.Dim("batch", min=1, max=max(batch, 2))},)
        with torch.no_grad():
            graph = torch.export.export(model, (two,), dynamic_shapes=dims).module()
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(0, len(calibration), batch):
                prepared(calibration[i : i + batch])
            return torch.export.export(convert_pt2e(prepared), (example,))

    return quantize


def no_calibration_error() -> ExportSettingsError:
    return ExportSettingsError(
        "int8 export needs real calibration images (e.g. --calib-data configs/train_embedded_mnist.yaml); "
        "random noise would set the activation ranges wrong. Pass allow_random_calibration=True "
        "(--allow-random-calib) only if accuracy does not matter"
    )


def export_executorch_int8(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: str,
    calibration: Optional[torch.Tensor] = None,
    allow_random_calibration: bool = False,
    seed: int = 0,
) -> str:
    """Save ``model`` as an int8 ExecuTorch ``.pte`` (PT2E static quantization, XNNPACK).

    Args:
        calibration: real images ``(N, C, H, W)`` for the activation ranges
            (:func:`load_images` reads them from a data config).
        allow_random_calibration: without ``calibration``, calibrate on 32 random-noise
            images instead of refusing (the ranges then fit noise, not images: for latency
            measurements, not for accuracy).
    """
    if calibration is None:
        if not allow_random_calibration:
            raise no_calibration_error()
        calibration = torch.randn(32, *example.shape[1:], generator=torch.Generator().manual_seed(seed))
    if tuple(calibration.shape[1:]) != tuple(example.shape[1:]):
        raise ExportSettingsError(
            f"calibration images are {tuple(calibration.shape[1:])}, the model takes {tuple(example.shape[1:])}"
        )
    return write_bytes(program_bytes(model.eval(), example, pt2e_quantizer(calibration)), path)
