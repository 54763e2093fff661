"""Backbones as a sequence of stages with taps at strides 8, 16 and 32.

``stage_features(name)`` returns a module whose forward gives ``{8: f8, 16: f16, 32: f32}``
and whose ``channels`` says each tap's width. Dilation is an argument: ``dilate=(False, True,
True)`` keeps the last two stages at stride 8 (one tap, ``{8: f8}``), applied to torchvision's
own modules rather than a copy of the backbone.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

RESNETS = ("resnet18", "resnet50", "resnet_slim")
BACKBONES = ("vgg16", *RESNETS, "mobilenet_v3", "lite0")
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# the input normalization a backbone's weights were trained with (others: ImageNet's)
NORM = {"lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


class StageFeatures(nn.Module):
    """Runs ``layers`` in order and returns the outputs of the layers listed in ``taps``."""

    def __init__(
        self,
        layers: list[nn.Module],
        taps: dict[int, int],
        channels: dict[int, int],
        norm: tuple = IMAGENET_NORM,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.mean, self.std = norm
        self.taps = {i: s for s, i in taps.items()}
        self.channels = channels
        self.last = max(self.taps)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                out[self.taps[i]] = x
            if i == self.last:
                break
        return out


def _probe(layers: list[nn.Module], first: bool = False) -> tuple[dict[int, int], dict[int, int]]:
    """Find the last (or ``first``) layer at each stride (8, 16, 32) and its width."""
    x = torch.zeros(1, 3, 64, 64)
    taps, chans = {}, {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            was = layer.training
            layer.eval()
            x = layer(x)
            layer.train(was)
            stride = 64 // x.shape[-1]
            if stride in (8, 16, 32) and not (first and stride in taps):
                taps[stride], chans[stride] = i, x.shape[1]
    return taps, chans


class SlimResNet(nn.Module):
    """A CPU-sized ResNet: torchvision's BasicBlock in four stages of ``widths`` (half of
    ResNet-18's by default, a quarter of its FLOPs) after a two-conv stride-4 stem."""

    def __init__(self, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2)):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
            nn.Conv2d(w0, w0, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], w0
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w:
                down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            stage = [BasicBlock(cin, w, stride, down)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: blocks start as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _dilate_resnet(model: nn.Module, dilate: tuple[bool, bool, bool]) -> None:
    """Turn the stride-2 first block of layer2/3/4 into stride 1 with dilation: what
    torchvision's ``replace_stride_with_dilation`` builds for Bottleneck (ResNet-50), also for
    BasicBlock (ResNet-18), which torchvision refuses to dilate."""
    dilation = 1
    for flag, layer in zip(dilate, (model.layer2, model.layer3, model.layer4), strict=True):
        if not flag:
            continue
        prev = dilation
        dilation *= 2
        for bi, block in enumerate(layer):
            for m in block.modules():
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                    d = prev if (bi == 0 and m.stride == (2, 2)) else dilation
                    m.stride, m.dilation, m.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def resnet(
    name: str, weights: str | None = None, dilate: tuple[bool, bool, bool] = (False,) * 3
) -> nn.Module:
    """A ResNet in ``RESNETS`` with ``layer1``…``layer4`` (torchvision's, or the slim one, which
    has no pretrained weights), the stages flagged in ``dilate`` kept at stride 8."""
    if name == "resnet_slim":
        m = SlimResNet()
    else:
        m = getattr(torchvision.models, name)(weights=weights)
    if any(dilate):
        _dilate_resnet(m, dilate)
    return m


def stage_features(
    name: str, dilate: tuple[bool, bool, bool] = (False, False, False), weights: str | None = None
) -> StageFeatures:
    """Backbone ``name`` in ``BACKBONES`` with taps at strides 8/16/32 (random init unless
    ``weights`` names torchvision weights, which need a network)."""
    if name == "vgg16":
        layers = list(torchvision.models.vgg16_bn(weights=weights).features)
    elif name in RESNETS:
        m = resnet(name, weights, dilate)
        stem = m.stem if name == "resnet_slim" else nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        layers = [stem, m.layer1, m.layer2, m.layer3, m.layer4]
    elif name == "mobilenet_v3":
        layers = list(torchvision.models.mobilenet_v3_large(weights=weights).features)
    elif name == "lite0":  # weights="imagenet": the registry package's (no network needed)
        from vision.models.efficientnet import lite0_stages

        layers = lite0_stages(weights, dilate[1:])
    else:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {name!r}")
    norm = NORM.get(name, IMAGENET_NORM)
    if any(dilate) and name not in (*RESNETS, "lite0"):
        raise ValueError(f"dilation: expected a ResNet or Lite0 backbone, got {name!r}")
    if any(dilate):  # the dilated stages stay at stride 8: one tap, the last layer
        taps, chans = _probe(layers)
        return StageFeatures(layers, {8: len(layers) - 1}, {8: chans[8]}, norm)
    # VGG: the pooling outputs pool3/pool4/pool5, as in the FCN paper; others: each stage's end
    taps, chans = _probe(layers, first=name == "vgg16")
    return StageFeatures(layers, taps, chans, norm)
