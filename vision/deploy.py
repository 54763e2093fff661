"""Deployable forms of a model, as ``Predictor`` backends: ONNX export, ONNX Runtime (float32
and static int8), conv–BN folding.

What goes into ONNX is the network: a segmenter whole (normalization, backbone, head,
upsampling: logits out); a one-stage torchvision detector (FCOS, RetinaNet) up to its head
outputs (normalization, backbone, FPN, head). Box decoding, score filtering and NMS then run
in torch with torchvision's own code (``anchor_generator``, ``postprocess_detections``), so
they are exactly the eager model's. Two-stage detectors and SSD are not exported (their RoI
heads and NMS have data-dependent shapes): ``export_onnx`` says so.

int8 is ONNX Runtime's static quantization in the QDQ format with uint8 activations and
per-channel int8 weights after ``quant_pre_process`` — the fast path on AVX-512 VNNI CPUs
(``../shared/PERF_NOTES.md``: the int8-activation default is about 2x slower, dynamic
quantization slower than float32) — calibrated on images the caller passes (training images).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vision.models.common import Unsupported
from vision.models.detection_export import DetectorDecoder, DetectorNetwork, padded
from vision.runtime_backend import SessionBackend
from vision.runtime_predictor import RUNTIMES

__all__ = [  # the export pieces live with the models, which define their export boundary
    "DetectorDecoder",
    "DetectorNetwork",
    "OrtBackend",
    "padded",
    "Unsupported",
    "export_onnx",
    "exportable",
    "quantize_int8",
    "variant_predictor",
]


def exportable(model: nn.Module) -> nn.Module:
    """The module that goes into ONNX: the model's own export boundary (raises
    ``Unsupported``)."""
    return model.export_module().eval()


def export_onnx(
    model: nn.Module, path: Path | str, opset: int = 17, size: int | None = None
) -> Path:
    """Export the network (see the module notes) with a dynamic batch dimension, for ``size``
    square inputs (default: the model's input size); torch's TorchScript-based exporter
    (``dynamo=False``), which handles these models."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = exportable(model)
    size = size or model.meta.input_size
    outputs = list(model.export_outputs())
    with torch.no_grad(), warnings.catch_warnings():
        # tracing notes that shape checks become constants: true and intended (fixed size)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # a fixed pad's reversed pads vector: a Slice kept unfolded, same outputs
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            net,
            (torch.rand(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes={"images": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
        )
    return path


def calibration_batches(predictor, reader, n: int, batch: int = 8) -> list[np.ndarray]:
    """int8 calibration input: letterboxed float batches (the predictor's preprocessing) of the
    first ``n`` images of ``reader`` (a training split)."""
    out = []
    for i in range(0, min(n, len(reader)), batch):
        imgs = [reader[j].image for j in range(i, min(i + batch, n, len(reader)))]
        x, _ = predictor.preprocess(imgs)
        out.append(x.numpy())
    return out


def quantize_int8(
    onnx_path: Path | str, out: Path | str, calibration: Iterable[np.ndarray]
) -> Path:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights) of an exported model,
    calibrated on ``calibration`` batches ``(B, 3, S, S)`` float32 in [0, 1]."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x.astype(np.float32)}

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # per-channel notes on GroupNorm constants
    try:
        _quantize(quantize_static, pre, out, Reader(), QuantFormat, QuantType)
    finally:
        root.setLevel(level)
    pre.unlink(missing_ok=True)
    return out


def _quantize(quantize_static, pre, out, reader, QuantFormat, QuantType) -> None:  # noqa: N803
    quantize_static(
        str(pre),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


class OrtBackend(SessionBackend):
    """ONNX Runtime (``OrtSession``: CPU provider, spinning off) as a ``Predictor`` backend."""


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in a module's children (in
    definition order, as ResNet blocks and our heads declare them) into the convolution, and
    replace it with an identity. Eval mode only. Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and _applied_in_order(parent, a, b)
            ):
                parent._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                parent._modules[b] = nn.Identity()
                folded += 1
    return folded


def folded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its BatchNorms folded (``model`` itself is left as it is);
    raises ``Unsupported`` when there is nothing to fold."""
    model = copy.deepcopy(model)
    if not fold_batchnorm(model):
        raise Unsupported("no Conv2d→BatchNorm2d pair to fold")
    return model


def _applied_in_order(parent: nn.Module, conv: str, bn: str) -> bool:
    """Whether ``parent`` applies ``bn`` right after ``conv``: true for ``nn.Sequential`` and
    for the ``convN``/``bnN`` pairs of torchvision's ResNet blocks."""
    if isinstance(parent, nn.Sequential):
        return True
    return conv.startswith("conv") and bn == "bn" + conv[4:]


# variant → (backend, precision) as /info reports them
VARIANT_KINDS = {
    "eager": ("torch", "float32"),
    "fused": ("torch", "float32"),
    "bf16": ("torch", "bfloat16"),
    "onnx": ("onnxruntime", "float32"),
    "int8": ("onnxruntime", "int8"),
    "openvino": ("openvino", "float32"),
    "openvino_int8": ("openvino", "int8"),
}


def runtime_spec(checkpoint: Path | str, variant: str) -> dict | None:
    """What ``vision.runtime_predictor.RuntimePredictor`` needs to run an exported variant
    without torch (JSON-ready: it travels to Ray actors), or None where the variant has no
    NumPy decoding (the torch kinds; detectors other than FCOS)."""
    from vision.predictor import Predictor

    if variant not in RUNTIMES:
        return None
    model = Predictor.from_checkpoint(checkpoint).model
    meta = model.meta
    spec = {
        "task": meta.task,
        "size": int(meta.input_size),
        "class_names": list(meta.class_names),
        "background": bool(getattr(meta, "background", True)),
        "colors": [list(c) for c in (getattr(meta, "colors", None) or [])],
    }
    if meta.task == "segmentation":
        return spec
    decoder = model.export_decoder(meta.input_size)
    numpy_spec = getattr(decoder, "numpy_spec", lambda: None)()
    if numpy_spec is None:
        return None
    return {**spec, "decoder": numpy_spec, "nms_iou": float(model.nms_iou)}


def variant_predictor(
    checkpoint: Path | str, variant: str = "eager", file: Path | str | None = None, **kw
):
    """The ``Predictor`` of a deployable variant of a checkpoint: the same stages, another
    backend (``file``: the variant's ONNX model for ``onnx``/``int8`` and their OpenVINO
    twins ``openvino``/``openvino_int8``, which compile the same files). Evaluation, the FPS
    protocol and the service all build variants here."""
    from vision.predictor import Predictor

    if variant not in VARIANT_KINDS:
        raise ValueError(f"variant: expected one of {list(VARIANT_KINDS)}, got {variant!r}")
    base = Predictor.from_checkpoint(checkpoint, **kw)
    if variant == "eager":
        return base
    if variant == "fused":
        return Predictor(folded_copy(base.model), base.device, channels_last=True)
    if variant == "bf16":
        if base.device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
            raise Unsupported("this CPU has no native bfloat16 (AVX512-BF16)")
        return Predictor(base.model, base.device, autocast=torch.bfloat16)
    if file is None:
        raise ValueError(f"variant {variant!r}: expected its ONNX file, got none")
    if VARIANT_KINDS[variant][0] == "openvino":
        from vision.deploy_openvino import OvBackend

        return Predictor(base.model, "cpu", backend=OvBackend(file, base.model))
    return Predictor(base.model, "cpu", backend=OrtBackend(file, base.model))
