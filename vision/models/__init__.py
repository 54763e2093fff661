"""Models: torchvision detectors, the CPU-sized default detector, FCN-32s/16s/8s, dilated
segmenters and torchvision segmentation baselines, in one registry."""

from vision.models.registry import (
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    build_model,
    list_models,
    load_weights,
    model_task,
    register_model,
    unregister_model,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "build_model",
    "list_models",
    "load_weights",
    "model_task",
    "register_model",
    "unregister_model",
]
