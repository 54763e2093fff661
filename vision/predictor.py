"""The inference pipeline, in four timed stages: decode → preprocess → infer → postprocess.

Used by evaluation, by the FPS protocol and by the REST service, so all three run the same
code. Images are resized so the longest side is the model's input size and padded at the
bottom/right (as in evaluation during training); outputs are mapped back to original pixels.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from vision.data.io import decode_image, read_image
from vision.data.transforms import _geometry
from vision.engine.checkpoint import load_checkpoint
from vision.models import build_model


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
    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        half: bool = False,
        channels_last: bool = False,
    ):
        self.device = resolve_device(device)
        self.half = half and self.device.type == "cuda"
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if self.half:
            self.model.half()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.meta = model.meta
        self.task = model.meta.task
        self.size = model.meta.input_size
        self._resize = A.Compose(_geometry(self.size, train=False))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", **kw) -> Predictor:
        """A predictor for a training checkpoint (the model is rebuilt from its metadata)."""
        ck = load_checkpoint(path)
        meta, args = ck["meta"], ck.get("args", {})
        model = build_model(
            meta["name"],
            len(meta["class_names"]),
            class_names=meta["class_names"],
            input_size=meta["input_size"],
            **args.get("model_kwargs", {}),
        )
        model.load_state_dict(ck["model"])
        model.meta.metrics = meta.get("metrics", {})
        return cls(model, device, **kw)

    @staticmethod
    def decode(data: bytes | str | Path) -> np.ndarray:
        """Image bytes or a path → RGB uint8, EXIF orientation applied."""
        if isinstance(data, (bytes, bytearray)):
            return decode_image(bytes(data))
        return read_image(data)

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[dict]]:
        resized, info = self.resize(images)
        return self.to_tensor(resized), info

    def resize(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[dict]]:
        """The NumPy half of preprocessing: letterbox each image to the input size."""
        out, info = [], []
        for img in images:
            h, w = img.shape[:2]
            out.append(np.ascontiguousarray(self._resize(image=img)["image"]))
            info.append({"orig_size": (h, w), "scale": self.size / max(h, w)})
        return out, info

    def to_tensor(self, resized: list[np.ndarray]) -> torch.Tensor:
        """The torch half: stack, move to the device, scale to [0, 1] (a server runs this on
        its inference thread, so only one thread's OpenMP team ever works)."""
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
        return self.model(x)

    def postprocess(
        self,
        raw,
        info: list[dict],
        score_threshold: float = 0.0,
        max_detections: int | None = None,
        agnostic_nms: bool = False,
    ) -> list[dict]:
        """To original pixels. ``agnostic_nms``: one label per object (boxes of any class that
        overlap a higher-scoring one beyond the model's NMS IoU are dropped); off by default,
        since per-class NMS scores higher on COCO AP (wrong-class duplicates still add recall)."""
        iou = self.model.nms_iou if agnostic_nms and self.task == "detection" else None
        return to_original(self.task, raw, info, score_threshold, max_detections, iou)

    def __call__(self, images: list[np.ndarray], **kw) -> list[dict]:
        x, info = self.preprocess(images)
        return self.postprocess(self.infer(x), info, **kw)


def to_original(
    task: str,
    raw,
    info: list[dict],
    score_threshold: float = 0.0,
    max_detections: int | None = None,
    agnostic_iou: float | None = None,
) -> list[dict]:
    """Map a batch of model outputs back to each image's original pixels. ``info[j]`` holds
    ``orig_size`` (h, w) and ``scale`` (longest-side resize, padding at the bottom/right).
    ``agnostic_iou``: also run NMS across classes at this IoU (detection)."""
    results = []
    for j, inf in enumerate(info):
        h, w = inf["orig_size"]
        if task == "detection":
            o = raw[j]
            keep = (o["scores"] >= score_threshold).nonzero().flatten()
            if agnostic_iou is not None and len(keep):
                kept = nms(o["boxes"][keep].float(), o["scores"][keep].float(), agnostic_iou)
                keep = keep[kept]
            boxes = (o["boxes"][keep].float() / inf["scale"]).cpu()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            scores, labels = o["scores"][keep].float().cpu(), o["labels"][keep].cpu()
            n = max_detections
            results.append({"boxes": boxes[:n], "scores": scores[:n], "labels": labels[:n]})
        else:
            rh, rw = max(1, round(h * inf["scale"])), max(1, round(w * inf["scale"]))
            results.append({"mask": upsample_argmax(raw[j, :, :rh, :rw], h, w).cpu()})
    return results


# above this many upsampled logits (classes x pixels) the mask is made in strips of rows
STRIP_ELEMENTS = 1 << 22


def upsample_argmax(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Class map ``(h, w)`` uint8 of ``(K, rh, rw)`` logits upsampled bilinearly
    (``align_corners=False``). Large outputs (a 40-megapixel upload: 800 MB of float32 logits
    for 5 classes at once) are made a strip of rows at a time with the same interpolation
    weights, so memory stays near ``STRIP_ELEMENTS`` floats whatever the image size."""
    k, rh, rw = logits.shape
    logits = logits.float()
    if k * h * w <= STRIP_ELEMENTS:
        up = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)
        return up[0].argmax(0).to(torch.uint8)
    y0, y1, wy = _bilinear_taps(rh, h, logits.device)
    x0, x1, wx = _bilinear_taps(rw, w, logits.device)
    out = torch.empty((h, w), dtype=torch.uint8, device=logits.device)
    step = max(1, STRIP_ELEMENTS // (k * w))
    for s in range(0, h, step):
        rows = slice(s, min(s + step, h))
        a = wy[rows, None]
        strip = logits[:, y0[rows]] * (1 - a) + logits[:, y1[rows]] * a  # (K, n, rw)
        strip = strip[:, :, x0] * (1 - wx) + strip[:, :, x1] * wx  # (K, n, w)
        out[rows] = strip.argmax(0).to(torch.uint8)
    return out


def _bilinear_taps(n_in: int, n_out: int, device) -> tuple[torch.Tensor, ...]:
    """Source indices and weights of bilinear resizing ``n_in`` → ``n_out`` as torch computes
    them with ``align_corners=False`` (negative source coordinates clamp to 0)."""
    src = ((torch.arange(n_out, device=device) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, src - lo
