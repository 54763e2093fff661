"""OpenVINO as a ``Predictor`` backend: ONNX files compiled by OpenVINO's CPU plugin — the
float32 export the ONNX Runtime variant runs, and an int8 twin quantized for OpenVINO by NNCF
(``quantize_openvino_int8``). Nothing else changes: the model's ``export_decoder``
turns the graph's outputs into the eager model's raw output, so decoding, NMS and class maps
are the eager model's.

Inference precision is pinned to float32 (``INFERENCE_PRECISION_HINT``): on CPUs with
AVX512-BF16 or AMX, OpenVINO would otherwise run float layers in bfloat16 and the variant
would no longer be the float32 model it says it is.

Compiled models are cached (OpenVINO's ``CACHE_DIR``: ``$VISION_OPENVINO_CACHE``, else
``openvino/`` under ``$VISION_WEIGHTS`` or ``~/.cache/vision``; an empty value turns it off):
compiling the int8 detector takes about 1.5 s on two cores, loading it from the cache a tenth
of that, which every service start, ``vision predict`` job and Ray model actor pays.
The model is read first and the read model compiled: OpenVINO then keys the cache on the
model's graph and weights (not the file's path), the device and the settings, so a file
rewritten in place is compiled again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vision.models.common import Unsupported
from vision.models.npm_weights import weights_root


def openvino_core():
    """OpenVINO's ``Core``, or ``Unsupported`` naming the package when it is missing."""
    try:
        import openvino as ov
    except ImportError as e:  # an optional runtime: the variant's row says why it is absent
        raise Unsupported(
            f"OpenVINO variants need the openvino package, got {type(e).__name__}: {e}; "
            "pip install 'openvino>=2023.1'"
        ) from e
    return ov.Core()


def cache_dir() -> str:
    """Where compiled models are cached ('' = no cache)."""
    if "VISION_OPENVINO_CACHE" in os.environ:
        return os.environ["VISION_OPENVINO_CACHE"]
    return str(weights_root() / "openvino")


def quantize_openvino_int8(
    onnx_path: Path | str, out: Path | str, calibration: Iterable[np.ndarray]
) -> Path:
    """NNCF's post-training int8 quantization of an exported float32 model, for OpenVINO:
    QDQ pairs where OpenVINO's CPU plugin fuses them into its int8 kernels (symmetric
    activations, per-channel weights, fast bias correction), calibrated on ``calibration``
    batches ``(B, 3, S, S)`` float32 in [0, 1]. The file is still ONNX (one file to ship).

    The convolutions that make the outputs stay float32 (``output_layers``): quantizing the
    detector's box-regression convolution, whose outputs span every level's scale, takes its
    COCO AP from 0.63 to 0.38; keeping the last layers float costs 0.2 ms.

    Why not OpenVINO on ONNX Runtime's QDQ file: that graph leaves 93 FakeQuantize, 76 Convert
    and 56 Reorder nodes unfused in the FCOS-Lite0 detector, 7.8 ms a frame against 4.1 ms
    for this one (2 threads, 160 px). ONNX Runtime runs this file slowly (17 ms): the ``int8``
    variant keeps its own quantizer."""
    try:  # its import makes torch note on stderr that there is no CUDA: not the caller's news
        with contextlib.redirect_stderr(io.StringIO()):
            import nncf
        import onnx
    except ImportError as e:
        raise Unsupported(
            f"the openvino_int8 variant is quantized by NNCF, got {type(e).__name__}: {e}; "
            "pip install 'nncf>=2.14'"
        ) from e
    images = single_images(calibration)
    logging.getLogger("nncf").setLevel(logging.WARNING)  # progress bars and per-step notes
    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    # NNCF draws progress bars on stdout (rich): kept out of the caller's log
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(images, lambda x: {name: x}),
            subset_size=max(1, len(images)),
            ignored_scope=nncf.IgnoredScope(names=output_layers(model)),
        )
    out = Path(out)
    onnx.save(quantized, str(out))
    return out


def single_images(calibration: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Calibration batches ``(B, 3, S, S)`` as float32 items of one image each: NNCF's
    statistics and bias correction assume batch 1."""
    return [np.asarray(b[i : i + 1], dtype=np.float32) for b in calibration for i in range(len(b))]


LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def output_layers(model) -> list[str]:
    """Names of the weighted layers (convolution, matrix product) nearest the graph's
    outputs: the first ones met walking back from each output through layers without
    weights (reshapes, concatenations, activations, additions)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, found = set(), []
    todo = [o.name for o in model.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in LAYERS:
            found.append(node.name)
        else:
            todo.extend(node.input)
    return sorted(found)


class OvBackend:
    """An ONNX file compiled by OpenVINO for the CPU, latency hint, ``threads`` inference
    threads (default: torch's count): torch tensor in, the eager model's raw output out."""

    def __init__(self, path: Path | str, model: nn.Module, threads: int | None = None):
        core = openvino_core()
        self.path = Path(path)
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if cache := cache_dir():
            config["CACHE_DIR"] = cache
        # compiled from the read model, not the path: the cache key is then the model's
        # content, so a file rewritten in place is never answered by an old blob
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.decoder = model.export_decoder(model.meta.input_size)

    def __call__(self, x: torch.Tensor):
        result = self.request.infer({0: x.detach().float().cpu().contiguous().numpy()})
        outs = [result[o] for o in self.compiled.outputs]  # the graph's order, as exported
        return self.decoder([torch.from_numpy(o.copy()) for o in outs])
