"""A distillation teacher run by ONNX Runtime instead of eager torch (``--kd-teacher-runtime``).

The teacher's forward pass is what a live distillation step pays for the teacher: the ImageNet
Lite0 FCN-8s at 320 px, batch 8, on 2 CPU cores takes 0.24 s in eager bfloat16 against a 0.64 s
step of the ResNet FCN-8s student. Exported once (``vision.deploy.export_onnx``, float32, or
static QDQ int8 calibrated on training images: the deployable-variants path), it runs in the
same step on the same jittered views, so the student keeps a consistent teacher (unlike
``--kd-cache``, which replays the un-jittered views): ORT float32 0.22 s, int8 0.16 s.
Segmentation teachers only: the loss of a detection teacher reads its FPN features, which the
exported network does not return.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

RUNTIMES = ("torch", "onnx", "int8")


def ort_teacher(
    teacher: nn.Module,
    runtime: str,
    folder: Path,
    calibration: Callable[[], list] | None = None,
    log: Callable = print,
    size: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images → logits`` by ONNX Runtime: ``teacher`` exported for ``size`` inputs (the
    training size; default: the teacher's own) to ``folder/teacher.onnx`` (and quantized to
    ``teacher.int8.onnx`` on ``calibration()``'s batches for ``int8``). Under ``torchrun`` the
    first rank writes the files and the others wait for them."""
    from vision.deploy import OrtBackend, export_onnx, quantize_int8
    from vision.engine.distributed import barrier, is_main

    if runtime not in RUNTIMES[1:]:
        raise ValueError(f"--kd-teacher-runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if teacher.meta.task != "segmentation":
        raise ValueError(
            f"--kd-teacher-runtime {runtime}: expected a segmentation teacher (a detector's KD "
            f"reads FPN features its ONNX graph does not return), got a {teacher.meta.task} one"
            "; use --kd-cache for detectors"
        )
    file = Path(folder) / ("teacher.int8.onnx" if runtime == "int8" else "teacher.onnx")
    if is_main():
        exported = export_onnx(teacher, Path(folder) / "teacher.onnx", size=size)
        if runtime == "int8":
            quantize_int8(exported, file, calibration())
    barrier()
    log(f"[train] teacher runs in ONNX Runtime ({runtime}): {file}")
    backend = OrtBackend(file, teacher)
    return lambda images: backend(images).to(images.device)
