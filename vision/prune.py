"""Structured channel pruning that really removes channels (FLOPs, parameters, file size and
latency drop), with Torch-Pruning's dependency graph, and loading a pruned checkpoint back.

What is pruned: every convolution of a segmenter (FCN-8s with its transposed-conv upsampling,
the dilated models) except the layers that produce class scores (their output channels are the
classes: the score layers and the upsampling of scores); of a one-stage detector (FCOS,
RetinaNet) the backbone and the FPN (so the head's input narrows), keeping the head's convolutions
whole: its towers normalize with GroupNorm(32) over 64 channels, and pruning that keeps the
group count (as Torch-Pruning does) would leave one channel per group. Importance:
``magnitude`` (L2 norm of a channel's weights), ``bn``
(BatchNorm scale, Liu et al. 2017 "network slimming"), ``taylor`` (first-order Taylor
expansion of the loss, Molchanov et al. 2019; needs a few training batches). The share of
channels removed from every prunable layer is chosen so that the asked share of FLOPs goes.

The pruned architecture travels in the checkpoint: ``meta.pruned`` records the run, and the
state dict's shapes are the architecture; ``fit_to_state_dict`` rebuilds the registry model
with those shapes before loading (``Predictor.from_checkpoint`` and training ``--weights`` do
it), so nothing is re-derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

IMPORTANCE = ("magnitude", "bn", "taylor")
SCOPES = ("all", "inner")


def _network(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """The module Torch-Pruning traces (tensor in, tensors out) and the layers to keep whole."""
    k = len(model.meta.class_names) + (1 if model.meta.task == "segmentation" else 0)
    if model.meta.task == "segmentation":
        keep = [
            m
            for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.out_channels == k
        ]
        return model, keep
    from vision.deploy import DetectorNetwork

    net = DetectorNetwork(model).eval()
    # the head keeps its width: its towers normalize with GroupNorm(32) over 64 channels, and
    # any pruning that keeps the group count leaves one channel per group (instance norm)
    return net, [m for m in model.net.head.modules() if isinstance(m, nn.Conv2d)]


def prune_flops(
    model: nn.Module,
    flops_ratio: float,
    importance: str = "magnitude",
    loss_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
    tolerance: float = 0.01,
    scope: str = "all",
    round_to: int | None = None,
) -> dict:
    """Prune ``model`` in place until its FLOPs are ``flops_ratio`` lower (within
    ``tolerance``). Every prunable layer loses the same share r of its channels; r is found
    on copies: uniform pruning removes about a·(2r − r²) of the FLOPs (inputs and outputs of
    a convolution both shrink), so a first guess, one fit of a, and secant steps get there in
    two or three tries. ``loss_batches()`` yields losses of a few training batches (Taylor).
    ``scope="inner"`` prunes only channels that no residual sum ties to other layers (the
    expanded channels inside inverted-residual blocks, a ResNet block's first convolution):
    the widths that skip connections and the FPN carry stay whole. ``round_to`` keeps every
    pruned width a multiple of it (CPU convolution kernels work on SIMD-wide channel blocks,
    so odd widths waste lanes)."""
    import copy

    if importance not in IMPORTANCE:
        raise ValueError(f"importance: expected one of {IMPORTANCE}, got {importance!r}")
    if not 0 < flops_ratio < 1:
        raise ValueError(f"FLOPs ratio: expected a fraction in (0, 1), got {flops_ratio}")
    if scope not in SCOPES:
        raise ValueError(f"pruning scope: expected one of {SCOPES}, got {scope!r}")
    tried: list[tuple[float, float]] = []
    r = 1 - (1 - flops_ratio) ** 0.5
    for _ in range(6):
        trial = _prune_ratio(copy.deepcopy(model), r, "magnitude", scope=scope, round_to=round_to)
        cut = trial["flops_cut"]
        tried.append((r, cut))
        if abs(cut - flops_ratio) <= tolerance:
            break
        if len(tried) == 1 and scope == "inner":  # one side of each layer: cut = a r
            r = min(r * flops_ratio / max(cut, 1e-9), 0.95)
        elif len(tried) == 1:  # fit the share of prunable FLOPs: cut = a (2r - r^2)
            a = cut / (2 * r - r * r)
            r = 1 - (1 - min(flops_ratio / a, 0.99)) ** 0.5
        else:  # secant on the last two tries
            (r0, c0), (r1, c1) = tried[-2], tried[-1]
            r = r1 + (flops_ratio - c1) * (r1 - r0) / ((c1 - c0) or 1e-9)
        r = min(max(r, 0.01), 0.95)
    r = min(tried, key=lambda t: abs(t[1] - flops_ratio))[0]
    report = _prune_ratio(model, r, importance, loss_batches, scope, round_to)
    report["flops_ratio_asked"] = flops_ratio
    return report


def _tied(net: nn.Module, example: torch.Tensor, keep: list[nn.Module]) -> list[nn.Module]:
    """Convolutions whose output channels a sum ties to another convolution's (residual
    connections, FPN merges): in Torch-Pruning's terms, groups with more than one
    non-depthwise convolution losing output channels."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    tied = []
    for group in graph.get_all_groups(ignored_layers=keep, root_module_types=(nn.Conv2d,)):
        producers = [
            dep.target.module
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
            and isinstance(dep.target.module, nn.Conv2d)
            and not 1 < dep.target.module.groups == dep.target.module.in_channels
        ]
        if len(producers) > 1:
            tied += producers
    return tied


def _prune_ratio(model, ratio, importance, loss_batches=None, scope="all", round_to=None) -> dict:
    """Remove ``ratio`` of the channels of every prunable layer (one Torch-Pruning step)."""
    import torch_pruning as tp

    imp = {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[importance]()
    net, keep = _network(model)
    size = model.meta.input_size
    example = torch.rand(1, 3, size, size)
    model.eval()
    macs0, params0 = macs(net, example), _params(model)
    if scope == "inner":
        keep = keep + _tied(net, example, keep)
    pruner = tp.pruner.MetaPruner(
        net, example, importance=imp, pruning_ratio=ratio, ignored_layers=keep, round_to=round_to
    )
    if importance == "taylor":
        if loss_batches is None:
            raise ValueError("Taylor importance needs training batches (loss_batches)")
        model.zero_grad()
        for loss in loss_batches():
            loss.backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    after = macs(net, example)
    report = {
        "flops_cut": 1 - after / macs0,
        "channel_ratio": ratio,
        "importance": importance,
        "scope": scope,
        "round_to": round_to,
        "macs_before": macs0,
        "macs_after": after,
        "params_before": params0,
        "params_after": _params(model),
    }
    model.meta.pruned = report
    return report


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics from ``batches`` of [0, 1] images
    (a cumulative average; no weight changes): pruning removes inputs of the next layers, so
    the statistics recorded before it no longer describe their outputs (Li et al., ECCV 2020,
    "EagleEye": adaptive BN). Returns the number of images seen."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was, seen = model.training, 0
    model.train()
    try:
        for x in batches:
            if model.meta.task == "detection":  # the backbone and FPN hold the BatchNorms
                net = model.net
                net.backbone(net.transform(list(x))[0].tensors)
            else:
                model(x)
            seen += len(x)
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.train(was)
    return seen


def macs(net: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions and linear layers of one forward pass."""
    total = 0

    def hook(m, i, o):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += i[0].numel() * m.out_channels // m.groups * k
        elif isinstance(m, nn.Linear):
            total += o.numel() * m.in_features

    hooks = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    return int(total)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Give every convolution and normalization layer of ``model`` the shapes ``state`` has
    (a pruned model's state dict), so that ``load_state_dict`` fits; returns how many layers
    changed. Kernel sizes, strides, dilations, group counts (GroupNorm) and depthwise
    convolutions are kept as the registry built them, and so is each layer's class."""
    changed = 0
    for name, m in list(model.named_modules()):
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or tuple(w.shape) == tuple(getattr(m, "weight", torch.empty(0)).shape):
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
    if isinstance(m, nn.GroupNorm):
        return nn.GroupNorm(m.num_groups, w.shape[0], m.eps, m.affine)
    return None
