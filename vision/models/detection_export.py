"""A one-stage detector's export boundary: the network ONNX holds ([0, 1] images → head
outputs) and the decoder that turns those outputs back into detections with the eager
model's own torchvision code (anchors, box decoding, score filtering, NMS)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList

from vision.models.common import Unsupported

ONE_STAGE = (FCOS, RetinaNet)


class DetectorNetwork(nn.Module):
    """The exportable part of a one-stage detector: [0, 1] images → head outputs."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        net = detector.net
        if not isinstance(net, ONE_STAGE):
            raise Unsupported(
                f"{type(net).__name__}: only one-stage detectors (FCOS, RetinaNet) are exported "
                "(two-stage RoI heads and SSD's NMS have data-dependent shapes)"
            )
        self.net = net
        self.keys = ("cls_logits", "bbox_regression") + (
            ("bbox_ctrness",) if isinstance(net, FCOS) else ()
        )

    def forward(self, x: torch.Tensor):
        """As the eager model's transform does at our letterboxed input size: normalize, no
        resize (scale 1), zero-pad to a multiple of ``size_divisible``; then backbone, head."""
        t = self.net.transform
        mean = torch.tensor(t.image_mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(t.image_std, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std
        # Python ints: the export is at one fixed size, and traced shape arithmetic would
        # round -(-72 // 32) towards zero in ONNX (padding to 64, i.e. cropping 8 pixels)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        pad_h, pad_w = padded(h, t.size_divisible) - h, padded(w, t.size_divisible) - w
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        features = list(self.net.backbone(x).values())
        head = self.net.head(features)
        return tuple(head[k] for k in self.keys)


def padded(size: int, divisible: int) -> int:
    return -(-size // divisible) * divisible


class DetectorDecoder:
    """Head outputs → detections with the eager model's own torchvision code."""

    def __init__(self, detector: nn.Module, size: int):
        self.net, self.offset = detector.net, detector.label_offset
        network = DetectorNetwork(detector).eval()
        self.keys = network.keys
        self.padded = padded(size, self.net.transform.size_divisible)
        with torch.inference_mode():  # the feature-map sizes at this input size, once
            x = torch.zeros(1, 3, self.padded, self.padded)
            feats = list(self.net.backbone(x).values())
        self.feats = [torch.empty(0, f.shape[1], f.shape[2], f.shape[3]) for f in feats]
        self.size = size
        self._anchors: torch.Tensor | None = None

    @torch.inference_mode()
    def __call__(self, outputs: Iterable[torch.Tensor]) -> list[dict]:
        head = dict(zip(self.keys, outputs, strict=True))
        b = head["cls_logits"].shape[0]
        sizes = [(self.size, self.size)] * b
        if self._anchors is None:  # the same for every image at this input size: made once
            canvas = torch.empty(1, 1, 1, 1).expand(1, 3, self.padded, self.padded)
            self._anchors = self.net.anchor_generator(ImageList(canvas, sizes[:1]), self.feats)[0]
        anchors = [self._anchors] * b
        per_level = [f.shape[2] * f.shape[3] for f in self.feats]
        hw = sum(per_level)
        a = head["cls_logits"].shape[1] // hw
        split_head = {k: list(v.split([n * a for n in per_level], dim=1)) for k, v in head.items()}
        split_anchors = [list(x.split([n * a for n in per_level])) for x in anchors]
        dets = self.net.postprocess_detections(split_head, split_anchors, sizes)
        dets = self.net.transform.postprocess(dets, sizes, sizes)
        for d in dets:
            d["labels"] = d["labels"] - self.offset
        return dets
