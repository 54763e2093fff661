"""Detectors from torchvision builders behind one interface, and the CPU-sized default.

``Detector.forward(images, targets)`` returns the loss dict when targets are given (training)
and detections otherwise; ``predict`` runs inference. Labels are our contiguous ``0..K-1``:
models whose softmax reserves class 0 for background (Faster R-CNN, SSD) see ``label + 1``.
Images are ``[0, 1]`` tensors; each model normalizes with its own mean/std.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from vision.models.backbones import IMAGENET_NORM, NORM, resnet, stage_features
from vision.models.common import ModelMeta, default_names
from vision.models.detection_export import DetectorDecoder, DetectorNetwork

# name → (torchvision builder, label offset, whether min_size/max_size apply)
TV_DETECTORS = {
    "fasterrcnn_resnet50_fpn": ("fasterrcnn_resnet50_fpn", 1, True),
    "fasterrcnn_mobilenet_v3_large_fpn": ("fasterrcnn_mobilenet_v3_large_fpn", 1, True),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("fasterrcnn_mobilenet_v3_large_320_fpn", 1, True),
    "retinanet_resnet50_fpn": ("retinanet_resnet50_fpn", 0, True),
    "fcos_resnet50_fpn": ("fcos_resnet50_fpn", 0, True),
    "ssd300_vgg16": ("ssd300_vgg16", 1, False),
    "ssdlite320_mobilenet_v3_large": ("ssdlite320_mobilenet_v3_large", 1, False),
}


REG_BIAS = 1.0  # initial box side (in anchor sizes) of the small FCOS detectors, see fcos_small


class Detector(nn.Module):
    """A torchvision detector with our label convention, answering what the rest of the
    project asks of a model (as ``vision.models.common.Segmenter`` does): its prediction
    layers, export boundary and decoder, backbone, normalization, and what distillation reads
    (``kd_taps``, ``kd_outputs``)."""

    HEAD_OUTPUTS = ("cls_logits", "bbox_reg", "bbox_ctrness")  # one-stage heads' final layers

    def __init__(self, net: nn.Module, label_offset: int, meta: ModelMeta):
        super().__init__()
        self.net, self.label_offset, self.meta = net, label_offset, meta

    def prediction_layers(self) -> list[nn.Module]:
        """The head's final layers (classes, box sides, centerness): pruning keeps them."""
        head = getattr(self.net, "head", None)
        if head is None:
            return []
        return [m for n, m in head.named_modules() if n.rpartition(".")[2] in self.HEAD_OUTPUTS]

    def export_module(self) -> nn.Module:
        """The network ONNX holds: a one-stage detector up to its head outputs (raises
        ``Unsupported`` for two-stage detectors and SSD)."""
        return DetectorNetwork(self)

    def export_outputs(self) -> tuple[str, ...]:
        return DetectorNetwork(self).keys

    def export_decoder(self, size: int):
        """Exported outputs → detections, with this model's own torchvision code."""
        return DetectorDecoder(self, size)

    def backbone_modules(self) -> list[nn.Module]:
        """The feature extractor: the backbone's body when it has an FPN on top (the FPN is
        new, like the head), else the whole backbone."""
        backbone = getattr(self.net, "backbone", None)
        if backbone is None:
            return []
        body = getattr(backbone, "body", None)
        return [body] if isinstance(body, nn.Module) else [backbone]

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        t = self.net.transform
        return tuple(t.image_mean), tuple(t.image_std)

    def kd_taps(self) -> dict[str, nn.Module]:
        """Where distillation listens (forward hooks) during the student's training step: the
        FPN (``features``), the class logits (``classes``), the box regression (``boxes``)."""
        head = self.net.head
        return {
            "features": self.net.backbone,
            "classes": head.classification_head,
            "boxes": head.regression_head,
        }

    def kd_outputs(self, images: torch.Tensor, boxes: bool = False) -> list:
        """What a teacher gives distillation: every FPN level's features, the class logits,
        then (``boxes``) the box regression's outputs, at the training transform."""
        x = self.net.transform(list(images))[0].tensors
        feats = list(self.net.backbone(x).values())
        head = self.net.head
        box = head.regression_head(feats) if boxes else []
        # FCOS's regression head gives (boxes, centerness); RetinaNet's one tensor
        box = list(box) if isinstance(box, (tuple, list)) else [box]
        return [*feats, head.classification_head(feats), *box]

    def forward(self, images, targets: list[dict] | None = None):
        imgs = list(images)
        if targets is not None:
            tg = [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset} for t in targets]
            return self.net(imgs, tg)
        out = self.net(imgs)
        for o in out:
            o["labels"] = o["labels"] - self.label_offset
        return out

    @property
    def nms_iou(self) -> float:
        """IoU threshold of the model's own per-class NMS (class-agnostic NMS reuses it)."""
        for owner in (self.net, getattr(self.net, "roi_heads", None)):
            if owner is not None and hasattr(owner, "nms_thresh"):
                return float(owner.nms_thresh)
        return 0.5

    @torch.inference_mode()
    def predict(self, images) -> list[dict]:
        """Detections per image: ``boxes`` (x1y1x2y2 in input pixels), ``scores``, ``labels``."""
        was = self.training
        self.eval()
        out = self(images)
        self.train(was)
        return out


def torchvision_detector(
    name: str,
    num_classes: int,
    class_names=None,
    input_size: int = 512,
    weights: str | None = None,
    weights_backbone: str | None = None,
    **kw,
) -> Detector:
    """A torchvision detector, random init unless ``weights``/``weights_backbone`` name
    torchvision weights (downloaded: needs a network). ``weights`` requires torchvision's class
    count; use transfer learning (``--weights PATH``) for other class counts."""
    builder, offset, sized = TV_DETECTORS[name]
    if sized:
        kw.setdefault("min_size", input_size)
        kw.setdefault("max_size", input_size)
    net = getattr(torchvision.models.detection, builder)(
        weights=weights,
        weights_backbone=weights_backbone,
        num_classes=None if weights else num_classes + offset,
        **kw,
    )
    meta = ModelMeta(name, "detection", class_names or default_names(num_classes), input_size)
    return Detector(net, offset, meta)


def fcos_small(
    num_classes: int,
    class_names=None,
    input_size: int = 192,
    backbone: str = "resnet18",
    fpn_width: int = 64,
    head_convs: int = 2,
    weights_backbone: str | None = None,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> Detector:
    """The CPU-sized default: FCOS on ResNet-18 with a 64-wide FPN (P3–P7) and a 2-conv head.
    ``backbone="lite0"``: on EfficientNet-Lite0 (``weights_backbone="imagenet"``: pretrained)."""
    mean, std = NORM.get(backbone, IMAGENET_NORM)
    if backbone == "lite0":
        body = StagesFPN(stage_features("lite0", weights=weights_backbone), fpn_width)
    else:
        res = resnet(backbone, weights_backbone)
        chans = [
            c.out_channels
            for c in (_last_conv(res.layer2), _last_conv(res.layer3), _last_conv(res.layer4))
        ]
        body = BackboneWithFPN(
            res,
            {"layer2": "0", "layer3": "1", "layer4": "2"},
            chans,
            fpn_width,
            extra_blocks=LastLevelP6P7(fpn_width, fpn_width),
        )
    anchors = AnchorGenerator(
        sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((1.0,),) * 5
    )
    head = FCOSHead(fpn_width, 1, num_classes, num_convs=head_convs)
    # torchvision's FCOS regresses ReLU(x) box sides in anchor sizes from weights N(0, 0.01)
    # and bias 0: every box starts as a point, where the GIoU loss has almost no gradient.
    # On COCO128 the Lite0 detector's outputs drifted below zero within 15 steps and the
    # regression never learned (ReLU: no gradient again; point boxes, AP 0). Bias 1 starts
    # each box two anchor sizes wide (targets are 4-8 for most levels): it learns from step 1.
    nn.init.constant_(head.regression_head.bbox_reg.bias, REG_BIAS)
    net = FCOS(
        body,
        num_classes,
        min_size=input_size,
        max_size=input_size,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        detections_per_img=detections_per_img,
        image_mean=list(mean),
        image_std=list(std),
    )
    # the registry names the model (fcos_r18, fcos_slim); this is the name for direct calls
    meta = ModelMeta(
        f"fcos_{backbone}",
        "detection",
        class_names or default_names(num_classes),
        input_size,
        mean=mean,
        std=std,
    )
    return Detector(net, 0, meta)


class StagesFPN(nn.Module):
    """An FPN (P3–P7) on a backbone's stride 8/16/32 taps, as torchvision's detectors expect
    a body (``out_channels``, an ordered dict of levels)."""

    def __init__(self, stages: nn.Module, width: int):
        super().__init__()
        self.body = stages
        self.fpn = FeaturePyramidNetwork(
            [stages.channels[s] for s in (8, 16, 32)],
            width,
            extra_blocks=LastLevelP6P7(width, width),
        )
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> OrderedDict:
        f = self.body(x)
        return self.fpn(OrderedDict((str(i), f[s]) for i, s in enumerate((8, 16, 32))))


def _last_conv(layer: nn.Module) -> nn.Conv2d:
    return [m for m in layer.modules() if isinstance(m, nn.Conv2d)][-1]


def detector_builders() -> dict:
    out = {name: partial(torchvision_detector, name) for name in TV_DETECTORS}
    out["fcos_r18"] = fcos_small
    out["fcos_slim"] = partial(fcos_small, backbone="resnet_slim")
    out["fcos_lite0"] = partial(fcos_small, backbone="lite0", weights_backbone="imagenet")
    return out
