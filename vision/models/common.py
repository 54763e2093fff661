"""Pieces every model shares: metadata, input normalization, bilinear-initialized upsampling."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vision.data.sample import mask_classes
from vision.errors import Unsupported as Unsupported  # raised by every model module

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UPSAMPLE_KINDS = ("transposed", "bilinear")


@dataclass
class ModelMeta:
    """What a model carries with it: reports and the service read it from here."""

    name: str
    task: str  # "detection" | "segmentation"
    class_names: list[str]
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    metrics: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    pruned: dict = field(default_factory=dict)  # vision.prune's record: shapes differ
    # segmenters: whether mask index 0 is a background class (``k + 1`` = class ``k``) or
    # every index is a real class (CamVid); the dataset's RGB per mask index, when it has them
    background: bool = True
    colors: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def default_names(num_classes: int) -> list[str]:
    return [f"class{k}" for k in range(num_classes)]


def he_init(module: nn.Module) -> None:
    """He (Kaiming) init for ReLU convolutions, unit BatchNorm, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """``(C, C, k, k)`` weights that make a transposed convolution upsample each channel
    bilinearly (channel i → channel i, zeros elsewhere)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = torch.outer(filt1d, filt1d).float()
    w = torch.zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels)
    w[idx, idx] = filt
    return w


class TransposedUpsample(nn.Module):
    """Learnable ×``factor`` upsampling: ``ConvTranspose2d(k=2f, stride=f, padding=f/2)``
    initialized to bilinear interpolation; output is exactly ``factor`` times the input size."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"TransposedUpsample: expected an even factor >= 2, got {factor}")
        self.factor = factor
        self.conv = nn.ConvTranspose2d(
            channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
        )
        with torch.no_grad():
            self.conv.weight.copy_(bilinear_kernel(channels, 2 * factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BilinearUpsample(nn.Module):
    """Fixed ×``factor`` bilinear upsampling (``align_corners=False``)."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


def make_upsample(kind: str, channels: int, factor: int) -> nn.Module:
    if kind == "transposed":
        return TransposedUpsample(channels, factor)
    if kind == "bilinear":
        return BilinearUpsample(channels, factor)
    raise ValueError(f"upsample: expected one of {UPSAMPLE_KINDS}, got {kind!r}")


def fit(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop (or zero-pad) a feature map to ``h × w`` anchored at the top-left corner."""
    x = x[..., :h, :w]
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (0, pw, 0, ph)) if ph > 0 or pw > 0 else x


class Segmenter(nn.Module):
    """Base for segmenters: normalizes ``[0, 1]`` images, returns logits ``(B, K+1, H, W)`` in
    training and evaluation alike; ``predict`` returns class-index masks.

    What the rest of the project needs to know of a model, it asks the model (detectors answer
    the same questions, ``vision.models.detection.Detector``): ``prediction_layers`` (kept
    whole by pruning), ``export_module`` / ``export_outputs`` / ``export_decoder`` (the ONNX
    export boundary and what follows it), ``backbone_modules`` (the pretrained feature
    extractor: its own learning rate, frozen BatchNorm), ``normalization``; a segmenter's
    distillation reads its logits, its only output."""

    meta: ModelMeta

    def prediction_layers(self) -> list[nn.Module]:
        """The layers whose output channels are the class-map indices (score layers, the
        upsampling of scores)."""
        k = len(mask_classes(self.meta.class_names, self.meta.background))
        return [
            m
            for m in self.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.out_channels == k
        ]

    def export_module(self) -> nn.Module:
        """The network ONNX holds: the whole segmenter ([0, 1] images → logits)."""
        return self

    def export_outputs(self) -> tuple[str, ...]:
        return ("logits",)

    def export_decoder(self, size: int):
        """Exported outputs → this model's raw output: the logits as they are."""
        return lambda outputs: outputs[0]

    def backbone_modules(self) -> list[nn.Module]:
        """The feature extractor: the first submodule named ``backbone``."""
        return [m for n, m in self.named_modules() if n.rpartition(".")[2] == "backbone"][:1]

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.meta.mean), tuple(self.meta.std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        mean = torch.tensor(self.meta.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.meta.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> list[dict]:
        was = self.training
        self.eval()
        logits = self(x)
        self.train(was)
        probs = logits.softmax(1)
        conf, mask = probs.max(1)
        return [{"mask": m, "confidence": c} for m, c in zip(mask, conf, strict=True)]
