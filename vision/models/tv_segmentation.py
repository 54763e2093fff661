"""torchvision's segmentation models as baselines, behind the same ``Segmenter`` interface."""

from __future__ import annotations

import torch
import torchvision

from vision.models.common import ModelMeta, Segmenter, default_names

TV_SEGMENTERS = ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


class TorchvisionSegmenter(Segmenter):
    def __init__(
        self,
        arch: str,
        num_classes: int,
        class_names=None,
        input_size: int = 256,
        weights: str | None = None,
        weights_backbone: str | None = None,
        background: bool = True,
        colors: list | None = None,
    ):
        super().__init__()
        if arch not in TV_SEGMENTERS:
            raise ValueError(f"expected one of {TV_SEGMENTERS}, got {arch!r}")
        kw = {"aux_loss": False} if arch != "lraspp_mobilenet_v3_large" else {}
        self.net = getattr(torchvision.models.segmentation, arch)(
            weights=weights,
            weights_backbone=weights_backbone,
            num_classes=num_classes + int(background),
            **kw,
        )
        self.meta = ModelMeta(
            arch,
            "segmentation",
            class_names or default_names(num_classes),
            input_size,
            background=background,
            colors=list(colors or []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))["out"]
