"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell, 2015).

A 1×1 score layer on the stride-32 features (after the VGG "fc6/fc7" convolutions with
dropout when the backbone is VGG16), upsampled ×2 and fused with score layers on the stride-16
(FCN-16s) and stride-8 (FCN-8s) features, then upsampled to the input by learnable
``ConvTranspose2d`` layers initialized to bilinear interpolation (``upsample="transposed"``),
or by fixed bilinear interpolation (``upsample="bilinear"``). Skip score layers start at zero,
as in the paper, so training starts from the coarser net's prediction. Feature maps are aligned
by top-left cropping to the input size (no 100-pixel input padding is needed, since our
backbones pad their convolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from vision.models.backbones import stage_features
from vision.models.common import ModelMeta, Segmenter, default_names, fit, he_init, make_upsample


class FCN(Segmenter):
    def __init__(
        self,
        num_classes: int,
        variant: int = 8,
        backbone: str = "resnet18",
        upsample: str = "transposed",
        fc_dim: int = 4096,
        class_names=None,
        input_size: int = 256,
        weights_backbone: str | None = None,
        background: bool = True,
        colors: list | None = None,
    ):
        super().__init__()
        if variant not in (8, 16, 32):
            raise ValueError(f"FCN variant: expected 8, 16 or 32, got {variant}")
        k = num_classes + int(background)  # (background +) classes
        self.variant = variant
        self.backbone = stage_features(backbone, weights=weights_backbone)
        c = self.backbone.channels
        if backbone == "vgg16":  # fc6/fc7 as convolutions, with dropout
            self.head = nn.Sequential(
                nn.Conv2d(c[32], fc_dim, 7, padding=3),
                nn.ReLU(inplace=True),
                nn.Dropout2d(0.5),
                nn.Conv2d(fc_dim, fc_dim, 1),
                nn.ReLU(inplace=True),
                nn.Dropout2d(0.5),
            )
            top = fc_dim
        else:
            self.head = nn.Dropout2d(0.1)
            top = c[32]
        self.score32 = nn.Conv2d(top, k, 1)
        he_init(self.head)
        self.score16 = nn.Conv2d(c[16], k, 1) if variant <= 16 else None
        self.score8 = nn.Conv2d(c[8], k, 1) if variant == 8 else None
        for m in (self.score16, self.score8):
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        self.up2a = make_upsample(upsample, k, 2) if variant <= 16 else None
        self.up2b = make_upsample(upsample, k, 2) if variant == 8 else None
        self.up_final = make_upsample(upsample, k, variant)
        self.meta = ModelMeta(
            f"fcn{variant}s_{backbone}",
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
        f = self.backbone(self.normalize(x))
        s = self.score32(self.head(f[32]))
        if self.variant <= 16:
            s = self.up2a(s)
            skip = self.score16(f[16])
            s = fit(s, *skip.shape[-2:]) + skip
        if self.variant == 8:
            s = self.up2b(s)
            skip = self.score8(f[8])
            s = fit(s, *skip.shape[-2:]) + skip
        return fit(self.up_final(s), h, w)
