"""The inference API: decode → preprocess → infer → postprocess, for one image or a batch.

Training validation, ``vision eval run``, benchmark suites, the FPS protocol and the REST
service all run these same stages. Images are resized so the longest side is the model's input
size and padded at the bottom/right; outputs are mapped back to original pixels.

Batch use (evaluation, FPS): ``decode``, ``preprocess`` (= ``resize`` + ``to_tensor``),
``infer``, ``postprocess``, or simply ``predictor(images)``.

Serving (one image per request, batched across requests): ``prepare(bytes)`` on a decode
thread (NumPy only), ``forward(arrays)`` then ``finish(raw, info)`` and ``render(result)`` on
the one inference thread. The caller never needs to know a task's output layout.

``infer`` calls ``self.backend`` (the torch module by default): deployable backends (compiled
torch, ONNX Runtime) plug in there and return the same raw outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from vision.data.io import DecodeLimits, decode_image, read_image
from vision.data.letterbox import Letterbox
from vision.engine.checkpoint import load_checkpoint
from vision.models import build_model
from vision.postprocess import (
    detections_to_original,
    mask_to_original,
    render_result,
    result_labels,
)
from vision.runtime_predictor import input_batch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU; otherwise as given
    (``cpu``, ``cuda``, ``cuda:1``), refused with a clear message when CUDA is asked but absent."""
    if str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected 'auto' or 'cpu' here (no CUDA device), got {spec!r}")
    return dev


class Predictor:
    """A model (or a deployable backend of it) with its pre- and post-processing.

    ``half``: float16 weights on CUDA; ``autocast``: run ``infer`` under ``torch.autocast``
    with this dtype (bfloat16 on the CPU, as training validates with ``--bf16``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        half: bool = False,
        channels_last: bool = False,
        autocast: torch.dtype | None = None,
        backend: Callable | None = None,
    ):
        self.device = resolve_device(device)
        self.half = half and self.device.type == "cuda"
        self.channels_last = channels_last
        self.autocast = autocast
        self.model = model.eval().to(self.device)
        if self.half:
            self.model.half()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.backend = backend or self.model
        # an ONNX Runtime / OpenVINO backend brings its own threads, and torch's OpenMP team
        # must not wake around it: its workers spin after each parallel op and take the cores
        # from the runtime (see ``quiet_torch``)
        self.runtime_backend = backend is not None and self.device.type == "cpu" and not self.half
        self.meta = model.meta
        self.task = model.meta.task
        self.size = model.meta.input_size
        self.letterbox = Letterbox(self.size)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", input_size: int | None = None, **kw
    ) -> Predictor:
        """A predictor for a training checkpoint (the model is rebuilt from its metadata), or
        for a model that ships its weights, by name (``nanodet_coco``). ``input_size``: run
        at another size than the one it was trained at."""
        ck = load_checkpoint(path)
        meta, args = ck["meta"], ck.get("args", {})
        model = build_model(
            meta["name"],
            len(meta["class_names"]),
            class_names=meta["class_names"],
            input_size=input_size or meta["input_size"],
            **_label_kwargs(meta),
            # the checkpoint holds every weight: no pretrained backbone file to read first
            **{**args.get("model_kwargs", {}), "weights_backbone": None},
        )
        if meta.get("pruned"):  # the pruned shapes are the state dict's
            from vision.models.reshape import fit_to_state_dict

            fit_to_state_dict(model, ck["model"])
            model.meta.pruned = meta["pruned"]
        model.load_state_dict(ck["model"])
        model.meta.metrics = meta.get("metrics", {})
        return cls(model, device, **kw)

    # -- batch stages --------------------------------------------------------------------
    @staticmethod
    def decode(data: bytes | str | Path, limits: DecodeLimits | None = None) -> np.ndarray:
        """Image bytes or a path → RGB uint8 (the project's one decoder, see ``vision.data.io``)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            return decode_image(bytes(data), limits)
        return read_image(data)

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[dict]]:
        resized, info = self.resize(images)
        return self.to_tensor(resized), info

    def resize(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[dict]]:
        """The NumPy half of preprocessing: letterbox each image to the input size."""
        return self.letterbox(images)

    def to_tensor(self, resized: list[np.ndarray]) -> torch.Tensor:
        """The torch half: stack, move to the device, scale to [0, 1] (a server runs this on
        its inference thread, so only one thread's OpenMP team ever works). For a runtime
        backend on the CPU the same float32 values are made by NumPy, in this thread."""
        if self.runtime_backend:
            return torch.from_numpy(input_batch(resized))
        batch = [torch.from_numpy(a).permute(2, 0, 1) for a in resized]
        x = torch.stack(batch).to(self.device, non_blocking=True)
        x = x.half() if self.half else x.float()
        x = x.div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def infer(self, x: torch.Tensor):
        """The model call (torchvision detectors run their NMS inside it)."""
        with self.torch_scope():
            if self.autocast is None:
                return self.backend(x)
            with torch.autocast(self.device.type, dtype=self.autocast):
                return self.backend(x)

    def torch_scope(self):
        """Where torch's own work around the backend runs: on one thread around a runtime
        backend (``quiet_torch``), as configured otherwise."""
        return quiet_torch() if self.runtime_backend else nullcontext()

    def split(self, raw) -> list:
        """A batch's raw output → one raw output per image."""
        return list(raw) if self.task == "detection" else list(raw.unbind(0))

    def postprocess(self, raw, info: list[dict], **opts) -> list[dict]:
        return [self.finish(r, i, **opts) for r, i in zip(self.split(raw), info, strict=True)]

    def __call__(self, images: list[np.ndarray], **opts) -> list[dict]:
        x, info = self.preprocess(images)
        return self.postprocess(self.infer(x), info, **opts)

    # -- serving: one image per request ------------------------------------------------------
    def prepare(self, data: bytes, limits: DecodeLimits | None = None) -> tuple[np.ndarray, dict]:
        """Bytes → (letterboxed array, info). NumPy only: safe on a decode thread."""
        return self.letterbox.prepare(data, limits)

    def forward(self, arrays: list[np.ndarray]) -> list:
        """Letterboxed arrays → one raw output per image (on the inference thread)."""
        return self.split(self.infer(self.to_tensor(arrays)))

    def finish(
        self,
        raw,
        info: dict,
        score_threshold: float = 0.0,
        max_detections: int | None = None,
        agnostic_nms: bool = False,
    ) -> dict:
        """One image's raw output → result in original pixels. Detection options:
        ``score_threshold``, ``max_detections``, ``agnostic_nms`` (one label per object: boxes
        of any class overlapping a higher-scoring one beyond the model's NMS IoU are dropped;
        off by default, since per-class NMS scores higher on COCO AP)."""
        with self.torch_scope():
            if self.task == "detection":
                iou = self.model.nms_iou if agnostic_nms else None
                return detections_to_original(raw, info, score_threshold, max_detections, iou)
            return mask_to_original(raw, info)

    def labels(self) -> dict:
        """What the answers index (``vision.postprocess.result_labels``)."""
        return result_labels(self.meta)

    def render(self, result: dict, mask_format: str = "png") -> dict:
        """A result as JSON-ready data (detections, or class counts and the mask)."""
        return render_result(self.meta, result, mask_format)


@contextmanager
def quiet_torch():
    """torch on one thread for the small tensor work around a runtime backend (a detector's
    decoding, the mapping back to original pixels). Even tiny ops can fork torch's OpenMP team
    (``torch.sqrt`` goes to MKL's vector library, which forks once ``torch.set_num_threads``
    has turned MKL's dynamic threading off), and the team then spins through the runtime's
    next inference: 2.5 ms more per image for the OpenVINO detector on two cores. Setting
    and restoring the count costs about 3 µs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _label_kwargs(meta: dict) -> dict:
    """A segmenter's mask layout as its checkpoint recorded it (older ones: background)."""
    if meta.get("task") != "segmentation":
        return {}
    return {"background": meta.get("background", True), "colors": meta.get("colors") or []}
