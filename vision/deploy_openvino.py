"""OpenVINO as a ``Predictor`` backend: the same ONNX files as the ONNX Runtime variants (the
float32 export and the static QDQ int8 one), compiled by OpenVINO's CPU plugin, which runs
QDQ graphs on its own int8 kernels. Nothing else changes: the model's ``export_decoder``
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

import os
from pathlib import Path

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
