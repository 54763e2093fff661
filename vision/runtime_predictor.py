"""Exported variants without torch: the runtime sessions (OpenVINO, ONNX Runtime) and
``RuntimePredictor``, the serving half of ``Predictor`` (``prepare``, ``forward``, ``finish``,
``labels``, ``render``) on NumPy alone.

``vision predict`` runs the ONNX Runtime and OpenVINO variants of FCOS detectors and of every
segmenter here, on both engines: a Ray model actor then starts in about a second instead of
four (no torch, no torchvision to import, no model to build). What it needs of the model is a
small ``spec`` made once, with torch, by ``vision.deploy.runtime_spec`` (class names, input
size, the detector's anchors and decoding settings). Decoding is ``vision.runtime_decode``'s.

OpenVINO compiled models are cached (OpenVINO's ``CACHE_DIR``: ``$VISION_OPENVINO_CACHE``,
else ``openvino/`` under ``$VISION_WEIGHTS`` or ``~/.cache/vision``; an empty value turns it
off): compiling the int8 detector takes about 1.5 s on two cores, loading it from the cache a
tenth of that. The model is read first and the read model compiled: OpenVINO then keys the
cache on the model's graph and weights (not the file's path), the device and the settings, so
a file rewritten in place is compiled again. Inference precision is pinned to float32
(``INFERENCE_PRECISION_HINT``): on CPUs with AVX512-BF16 or AMX, OpenVINO would otherwise run
float layers in bfloat16 and the variant would no longer be the float32 model it says it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from vision.config import weights_root
from vision.data.letterbox import Letterbox
from vision.errors import Unsupported
from vision.postprocess import render_result, result_labels, upsample_argmax, valid_size
from vision.runtime_decode import FcosDecoder, detections_to_original

RUNTIMES = {"onnx": "onnxruntime", "int8": "onnxruntime", "openvino": "openvino",
            "openvino_int8": "openvino"}  # fmt: skip


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


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU (latency hint, ``threads`` inference
    threads): a float32 batch in, the graph's outputs in its order out."""

    def __init__(self, path: Path | str, threads: int):
        core = openvino_core()
        self.path = Path(path)
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads),
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if cache := cache_dir():
            config["CACHE_DIR"] = cache
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({0: x})
        return [result[o].copy() for o in self.compiled.outputs]  # the request reuses them


class OrtSession:
    """An ONNX Runtime CPU session, ``threads`` intra-op threads, spinning off (so that it
    does not fight other threads of the process): a float32 batch in, the outputs out."""

    def __init__(self, path: Path | str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": x})


def session(variant: str, path: Path | str, threads: int):
    """The runtime session of an exported variant (``onnx``, ``int8``, ``openvino``,
    ``openvino_int8``)."""
    if variant not in RUNTIMES:
        raise ValueError(f"variant: expected one of {list(RUNTIMES)}, got {variant!r}")
    return (OpenVinoSession if RUNTIMES[variant] == "openvino" else OrtSession)(path, threads)


def input_batch(resized: list[np.ndarray]) -> np.ndarray:
    """Letterboxed uint8 images → the ``(B, 3, S, S)`` float32 batch in [0, 1], divided in
    float32 as torch's ``div_`` does (the same values as ``Predictor.to_tensor``)."""
    x = np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32, order="C")
    x /= np.float32(255.0)
    return x


class RuntimePredictor:
    """An exported variant's serving stages on NumPy: ``prepare(bytes)`` → ``forward(arrays)``
    → ``finish(raw, info, **options)`` → ``render(result)``, as ``Predictor``'s; results hold
    NumPy arrays instead of CPU tensors. ``spec``: from ``vision.deploy.runtime_spec``;
    ``threads``: the runtime's inference threads."""

    runtime_backend = True
    half = False

    def __init__(self, spec: dict, file: Path | str, variant: str, threads: int):
        self.spec = spec
        self.task, self.size = spec["task"], int(spec["size"])
        self.meta = SimpleNamespace(
            task=self.task,
            class_names=list(spec["class_names"]),
            background=spec["background"],
            colors=spec["colors"],
        )
        self.letterbox = Letterbox(self.size)
        self.session = session(variant, file, threads)
        self.decoder = FcosDecoder(spec["decoder"], self.size) if self.task == "detection" else None

    def prepare(self, data: bytes, limits=None) -> tuple[np.ndarray, dict]:
        """Bytes → (letterboxed array, info), as ``Predictor.prepare``."""
        return self.letterbox.prepare(data, limits)

    def forward(self, arrays: list[np.ndarray]) -> list:
        """Letterboxed arrays → one raw output per image (a detector's candidates at the
        input size, NMS left to ``finish``; a segmenter's ``(K, S, S)`` logits)."""
        outputs = self.session(input_batch(arrays))
        return self.decoder(outputs) if self.decoder else list(outputs[0])

    def finish(
        self,
        raw,
        info: dict,
        score_threshold: float = 0.0,
        max_detections: int | None = None,
        agnostic_nms: bool = False,
    ) -> dict:
        """One image's raw output → its result in original pixels (``Predictor.finish``)."""
        if self.task == "detection":
            iou = float(self.spec["nms_iou"]) if agnostic_nms else None
            dets = self.decoder.select(raw, score_threshold)
            return detections_to_original(dets, info, score_threshold, max_detections, iou)
        h, w = info["orig_size"]
        rh, rw = valid_size(info)
        crop = np.ascontiguousarray(raw[:, :rh, :rw], np.float32)
        return {"mask": upsample_argmax(crop, h, w)}

    def labels(self) -> dict:
        return result_labels(self.meta)

    def render(self, result: dict, mask_format: str = "png") -> dict:
        return render_result(self.meta, result, mask_format)
