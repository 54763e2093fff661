"""A one-stage detector's export boundary: the network ONNX holds ([0, 1] images → head
outputs) and the decoder that turns those outputs back into detections by the eager model's
rules: torchvision's own code (anchors, box decoding, score filtering, NMS), or for FCOS the
same steps on all levels at once (``fcos_detections``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

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
        self.per_level = [f.shape[2] * f.shape[3] for f in self.feats]

    def anchors(self) -> torch.Tensor:
        """The anchors at this input size (the same for every image: made once)."""
        if self._anchors is None:
            canvas = torch.empty(1, 1, 1, 1).expand(1, 3, self.padded, self.padded)
            images = ImageList(canvas, [(self.size, self.size)])
            self._anchors = self.net.anchor_generator(images, self.feats)[0]
        return self._anchors

    def numpy_spec(self) -> dict | None:
        """What ``vision.runtime_decode.FcosDecoder`` needs to decode like this one without
        torch (JSON-ready), or None for a detector it does not know (RetinaNet)."""
        if not isinstance(self.net, FCOS) or not self.net.box_coder.normalize_by_size:
            return None
        return {
            "anchors": self.anchors().flatten().tolist(),
            "per_level": list(self.per_level),
            "score_thresh": float(self.net.score_thresh),
            "topk": int(self.net.topk_candidates),
            "nms_thresh": float(self.net.nms_thresh),
            "detections_per_img": int(self.net.detections_per_img),
            "label_offset": int(self.offset),
        }

    @torch.inference_mode()
    def __call__(self, outputs: Iterable[torch.Tensor]) -> list[dict]:
        head = dict(zip(self.keys, outputs, strict=True))
        b = head["cls_logits"].shape[0]
        sizes = [(self.size, self.size)] * b
        self.anchors()
        if isinstance(self.net, FCOS):
            parts = [[head[k][i] for k in self.keys] for i in range(b)]
            dets = [
                fcos_detections(self.net, *p, self._anchors, self.per_level, self.size)
                for p in parts
            ]
        else:
            dets = self._torchvision(head, b, sizes)
        for d in dets:
            d["labels"] = d["labels"] - self.offset
        return dets

    def _torchvision(self, head: dict, b: int, sizes: list) -> list[dict]:
        """torchvision's own per-level decoding (RetinaNet)."""
        anchors = [self._anchors] * b
        hw = sum(self.per_level)
        a = head["cls_logits"].shape[1] // hw
        split_head = {
            k: list(v.split([n * a for n in self.per_level], dim=1)) for k, v in head.items()
        }
        split_anchors = [list(x.split([n * a for n in self.per_level])) for x in anchors]
        dets = self.net.postprocess_detections(split_head, split_anchors, sizes)
        return self.net.transform.postprocess(dets, sizes, sizes)


def fcos_detections(
    net: FCOS,
    logits: torch.Tensor,
    regression: torch.Tensor,
    ctrness: torch.Tensor,
    anchors: torch.Tensor,
    per_level: list[int],
    size: int,
) -> dict:
    """One image's detections from its FCOS head outputs ``(N, K)``, ``(N, 4)``, ``(N, 1)``
    over all ``N`` locations, by ``FCOS.postprocess_detections``' rules with the levels'
    candidates decoded and suppressed together (about 40 tensor operations instead of 80):
    scores ``sqrt(sigmoid(cls) * sigmoid(ctr))`` above ``score_thresh``; the
    ``topk_candidates`` best of each level; boxes decoded and clipped to the ``size`` square
    input, as the eager model does (the letterbox's ``scale`` maps them back later);
    per-class NMS; the ``detections_per_img`` best. Scores and each level's ``topk`` are
    computed on the same slices as torchvision's and candidates go to NMS in its order, so
    the answers are equal bit for bit, equal scores included."""
    k = logits.shape[1]
    # scored level by level as torchvision does: the vectorized sigmoid and sqrt round the
    # last bit differently by array length, and these are the same slices of the same outputs
    scores = torch.cat(
        [
            torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr)).flatten()
            for cls, ctr in zip(logits.split(per_level), ctrness.split(per_level), strict=True)
        ]
    )
    idx = torch.where(scores > net.score_thresh)[0]  # ascending: grouped by level
    ends = torch.searchsorted(idx, torch.tensor(per_level).cumsum(0) * k).tolist()
    order, start = [], 0
    for end in ends:  # each level's best first, by the same topk call on the same scores
        if end > start:
            top = scores[idx[start:end]].topk(min(net.topk_candidates, end - start)).indices
            order.append(top + start)
        start = end
    idx = idx[torch.cat(order)] if order else idx
    scores = scores[idx]
    at = torch.div(idx, k, rounding_mode="floor")
    labels = idx % k
    boxes = net.box_coder.decode(regression[at], anchors[at])
    boxes = box_ops.clip_boxes_to_image(boxes, (size, size))
    keep = box_ops.batched_nms(boxes, scores, labels, net.nms_thresh)[: net.detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
