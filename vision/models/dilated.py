"""Dilated-convolution segmenters: a ResNet kept at output stride 8 by dilation, then a
DeepLab-LargeFOV head or the Yu & Koltun context module, then ×8 upsampling (transposed
convolution initialized to bilinear, or fixed bilinear)."""

from __future__ import annotations

import torch
from torch import nn

from vision.models.backbones import stage_features
from vision.models.common import ModelMeta, Segmenter, default_names, fit, he_init, make_upsample

CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


def largefov_head(in_ch: int, width: int, out_ch: int) -> nn.Sequential:
    """DeepLab-LargeFOV: 3×3 conv with dilation 12, 1×1 conv, dropout after each, classifier."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=12, dilation=12),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.5),
        nn.Conv2d(width, width, 1),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.5),
        nn.Conv2d(width, out_ch, 1),
    )


def context_module(in_ch: int, width: int, out_ch: int) -> nn.Sequential:
    """Yu & Koltun's context module: 3×3 convs with dilations 1, 1, 2, 4, 8, 16 and a final
    3×3 (dilation 1), each with BatchNorm and ReLU, then a 1×1 classifier."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, width, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    for d in CONTEXT_DILATIONS:
        layers += [
            nn.Conv2d(width, width, 3, padding=d, dilation=d),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.Conv2d(width, out_ch, 1))


class DilatedSegmenter(Segmenter):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        head: str = "context",
        width: int = 128,
        upsample: str = "transposed",
        class_names=None,
        input_size: int = 256,
        weights_backbone: str | None = None,
        background: bool = True,
        colors: list | None = None,
    ):
        super().__init__()
        k = num_classes + int(background)
        self.backbone = stage_features(
            backbone, dilate=(False, True, True), weights=weights_backbone
        )
        c = self.backbone.channels[8]
        if head == "context":
            self.head = context_module(c, width, k)
        elif head == "largefov":
            self.head = largefov_head(c, width, k)
        else:
            raise ValueError(f"head: expected 'context' or 'largefov', got {head!r}")
        he_init(self.head)
        self.up = make_upsample(upsample, k, 8)
        self.meta = ModelMeta(
            f"dilated_{head}_{backbone}",
            "segmentation",
            class_names or default_names(num_classes),
            input_size,
            mean=self.backbone.mean,  # the normalization the backbone's weights expect
            std=self.backbone.std,
            background=background,
            colors=list(colors or []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return fit(self.up(self.head(self.backbone(self.normalize(x))[8])), h, w)
