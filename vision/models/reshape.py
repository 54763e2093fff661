"""A registry model rebuilt to the layer shapes of a state dict (a pruned checkpoint's): the
pruned shapes are the architecture, so loading a pruned model starts here."""

from __future__ import annotations

import torch
from torch import nn


def fit_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Give every convolution and normalization layer of ``model`` the shapes ``state`` has
    (a pruned model's state dict), so that ``load_state_dict`` fits; returns how many layers
    changed. Kernel sizes, strides, dilations, channels per group (GroupNorm) and depthwise
    convolutions are kept as the registry built them, and so is each layer's class."""
    changed = 0
    for name, m in list(model.named_modules())[1:]:  # the first is the model: not swappable
        w, own = state.get(f"{name}.weight"), getattr(m, "weight", None)
        if w is None or own is None or w.shape == own.shape:
            continue
        new = _resized(m, w)
        if new is None:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
        changed += 1
    return changed


def _resized(m: nn.Module, w: torch.Tensor) -> nn.Module | None:
    bias = getattr(m, "bias", None) is not None
    if isinstance(m, nn.Conv2d):
        depthwise = m.groups > 1 and m.groups == m.in_channels
        groups = w.shape[0] if depthwise else m.groups
        return type(m)(  # subclasses too (EfficientNet's SameConv2d pads in forward)
            w.shape[1] * groups, w.shape[0], m.kernel_size, m.stride, m.padding, m.dilation,
            groups, bias, m.padding_mode,
        )  # fmt: skip
    if isinstance(m, nn.ConvTranspose2d):
        return type(m)(
            w.shape[0], w.shape[1] * m.groups, m.kernel_size, m.stride, m.padding,
            m.output_padding, m.groups, bias, m.dilation,
        )  # fmt: skip
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(w.shape[0], m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.GroupNorm):  # pruning removes whole groups: channels per group stay
        size = m.num_channels // m.num_groups
        return nn.GroupNorm(w.shape[0] // size, w.shape[0], m.eps, m.affine)
    return None
