"""Structured channel pruning that really removes channels (FLOPs, parameters, file size and
latency drop), with Torch-Pruning's dependency graph, and loading a pruned checkpoint back.

What is pruned: every convolution of a segmenter (FCN-8s with its transposed-conv upsampling,
the dilated models) except the layers that produce class scores (their output channels are the
classes: the score layers and the upsampling of scores); of a one-stage detector (FCOS,
RetinaNet) the backbone, the FPN and the head's towers, keeping the final class, box and
centerness layers whole. The towers normalize with GroupNorm(32) over 64 channels: Torch-Pruning
keeps a GroupNorm's group count (half the channels gone would leave one per group), so here whole
groups go instead (``_GroupNormPruner``: importance averaged over each group's channels, the group
count lowered with them; channels per group, and so what each group normalizes, unchanged).
Importance:
``magnitude`` (L2 norm of a channel's weights), ``bn``
(BatchNorm scale, Liu et al. 2017 "network slimming"), ``taylor`` (first-order Taylor
expansion of the loss, Molchanov et al. 2019; needs a few training batches). The share of
channels removed from every prunable layer is chosen so that the asked share of FLOPs goes.

The pruned architecture travels in the checkpoint: ``meta.pruned`` records the run, and the
state dict's shapes are the architecture; ``vision.models.reshape.fit_to_state_dict``
rebuilds the registry model
with those shapes before loading (``Predictor.from_checkpoint`` and training ``--weights`` do
it), so nothing is re-derived by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

IMPORTANCE = ("magnitude", "bn", "taylor")
SCOPES = ("all", "inner")
RANKINGS = ("layer", "global")
MAX_LAYER_CUT = 0.8  # global ranking: no layer loses more than this share of its channels


def traced_network(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """The module Torch-Pruning traces (tensor in, tensors out: the model's export boundary)
    and the layers to keep whole (its prediction layers)."""
    return model.export_module().eval(), model.prediction_layers()


def _group_size(model: nn.Module) -> int:
    """Channels per GroupNorm group (1 without GroupNorm): pruned widths keep multiples of it."""
    sizes = {m.num_channels // m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    if len(sizes) > 1:
        raise ValueError(f"GroupNorm: expected one channel count per group, got {sorted(sizes)}")
    return sizes.pop() if sizes else 1


class _GroupAverage:
    """An importance whose scores are averaged over each GroupNorm group of a dependency group,
    so that the lowest-ranked channels make whole groups. ``ranks``: the averages' ranks
    (ties broken by position; enough within a layer), else the averages (a global ranking
    compares them across layers). ``max_cut`` < 1 (global ranking): each layer's best
    ``n - floor(max_cut * n)`` channels (or groups) score infinity, so no layer loses more
    than that share. Torch-Pruning's own ``max_pruning_ratio`` bounds a layer only between
    iterative steps: in one step a layer whose scores all fall below the global threshold
    went whole (seen: 7 of 8 channels under a 0.8 cap)."""

    def __init__(self, base, ranks: bool = True, max_cut: float = 1.0):
        self.base, self.ranks, self.max_cut = base, ranks, max_cut

    def __call__(self, group) -> torch.Tensor | None:
        imp = self.base(group)
        if imp is None:
            return None
        norms = [d.target.module for d, _ in group if isinstance(d.target.module, nn.GroupNorm)]
        size = 1
        if norms:
            gn = norms[0]
            size = gn.num_channels // gn.num_groups
            if len(imp) != gn.num_channels:
                raise ValueError(
                    f"GroupNorm pruning: expected {gn.num_channels} channel scores, got {len(imp)}"
                )
            imp = imp.view(-1, size).mean(1)
            if self.ranks:
                rank = torch.empty_like(imp)
                rank[torch.argsort(imp, stable=True)] = torch.arange(len(imp), dtype=imp.dtype)
                return rank.repeat_interleave(size)
        if self.max_cut < 1:
            keep = len(imp) - math.floor(self.max_cut * len(imp))
            imp = imp.clone()
            imp[torch.topk(imp, keep).indices] = math.inf
        return imp.repeat_interleave(size) if size > 1 else imp


def _group_norm_pruner():
    """Torch-Pruning's GroupNorm handler, changed to remove whole groups (and lower the group
    count) instead of the same share of every group."""
    from torch_pruning.pruner.function import GroupNormPruner

    class _GroupNormPruner(GroupNormPruner):
        def prune_out_channels(self, layer: nn.GroupNorm, idxs) -> nn.Module:
            size = layer.num_channels // layer.num_groups
            groups = {int(i) // size for i in idxs}
            if len(groups) * size != len(set(int(i) for i in idxs)):
                raise ValueError(
                    f"GroupNorm pruning: expected whole groups of {size} channels, got channels "
                    f"{sorted(int(i) for i in idxs)}"
                )
            super().prune_out_channels(layer, idxs)
            layer.num_groups -= len(groups)
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channel_groups(self, layer) -> int:
            return 1  # channels are ranked one by one (``_GroupAverage`` makes them groups)

        get_in_channel_groups = get_out_channel_groups

    return _GroupNormPruner()


def prune_flops(
    model: nn.Module,
    flops_ratio: float,
    importance: str = "magnitude",
    loss_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
    tolerance: float = 0.01,
    scope: str = "all",
    round_to: int | None = None,
    ranking: str = "layer",
) -> dict:
    """Prune ``model`` in place until its FLOPs are ``flops_ratio`` lower (within
    ``tolerance``). Every prunable layer loses the same share r of its channels; r is found
    on copies: uniform pruning removes about a·(2r − r²) of the FLOPs (inputs and outputs of
    a convolution both shrink), so a first guess, one fit of a, and secant steps get there in
    two or three tries. ``loss_batches()`` yields losses of a few training batches (Taylor).
    ``ranking="global"``: r is the share of all prunable channels, and the lowest-scored ones
    across layers go (Torch-Pruning's global pruning; scores normalized per layer by their mean;
    no layer loses more than ``MAX_LAYER_CUT``), so layers that matter less lose more.
    ``scope="inner"`` prunes only channels that no residual sum ties to other layers (the
    expanded channels inside inverted-residual blocks, a ResNet block's first convolution):
    the widths that skip connections and the FPN carry stay whole. ``round_to`` keeps every
    pruned width a multiple of it (CPU convolution kernels work on SIMD-wide channel blocks,
    so odd widths waste lanes). Returns the report (also ``model.meta.pruned``) with
    ``kept``: the output channels each pruned convolution kept, by traced name (what
    ``vision.reconstruct`` needs)."""
    if importance not in IMPORTANCE:
        raise ValueError(f"importance: expected one of {IMPORTANCE}, got {importance!r}")
    if not 0 < flops_ratio < 1:
        raise ValueError(f"FLOPs ratio: expected a fraction in (0, 1), got {flops_ratio}")
    if scope not in SCOPES:
        raise ValueError(f"pruning scope: expected one of {SCOPES}, got {scope!r}")
    if ranking not in RANKINGS:
        raise ValueError(f"pruning ranking: expected one of {RANKINGS}, got {ranking!r}")
    if importance == "taylor":  # gradients once; the trial copies carry them
        if loss_batches is None:
            raise ValueError("Taylor importance needs training batches (loss_batches)")
        model.zero_grad()
        for loss in loss_batches():
            loss.backward()
    # a global ranking's cut depends on the scores: the trials rank as the final step does
    probe = importance if ranking == "global" else "magnitude"
    tried: list[tuple[float, float]] = []
    # a global share of channels must leave room under each layer's cap (whole channels)
    top = 0.95 if ranking == "layer" else MAX_LAYER_CUT - 0.1
    r = min(1 - (1 - flops_ratio) ** 0.5, top)
    for _ in range(8):
        cut = _prune_ratio(_copy(model), r, probe, scope, round_to, ranking)[0]["flops_cut"]
        tried.append((r, cut))
        if abs(cut - flops_ratio) <= tolerance:
            break
        if len(tried) == 1 and scope == "inner":  # one side of each layer: cut = a r
            r = r * flops_ratio / max(cut, 1e-9)
        elif len(tried) == 1:  # fit the share of prunable FLOPs: cut = a (2r - r^2)
            a = cut / (2 * r - r * r)
            r = 1 - (1 - min(flops_ratio / a, 0.99)) ** 0.5
        else:  # secant on the last two tries
            (r0, c0), (r1, c1) = tried[-2], tried[-1]
            r = r1 + (flops_ratio - c1) * (r1 - r0) / ((c1 - c0) or 1e-9)
        r = min(max(r, 0.01), top)
    r = min(tried, key=lambda t: abs(t[1] - flops_ratio))[0]
    report, kept = _prune_ratio(model, r, importance, scope, round_to, ranking)
    report["flops_ratio_asked"] = flops_ratio  # (the same dict as model.meta.pruned)
    report["trials"] = len(tried)  # pruned copies the search made
    return {**report, "kept": kept}


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy with the gradients (``Parameter.__deepcopy__`` leaves them out)."""
    import copy

    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()
    return twin


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


def _prune_ratio(
    model: nn.Module, ratio: float, importance: str, scope: str, round_to: int | None, ranking: str
) -> tuple[dict, dict[str, list[int]]]:
    """Remove ``ratio`` of the channels of every prunable layer, or of all of them ranked
    together (one Torch-Pruning step). Taylor scores read the gradients already there.
    Returns the report (also ``model.meta.pruned``) and the kept output channels by name."""
    import torch_pruning as tp

    imp = {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[importance]()
    net, keep = traced_network(model)
    size = model.meta.input_size
    example = torch.rand(1, 3, size, size)
    model.eval()
    macs0, params0 = macs(net, example), _params(model)
    if scope == "inner":
        keep = keep + _tied(net, example, keep)
    per_group = _group_size(model)
    if per_group > 1:  # widths stay whole GroupNorm groups
        round_to = math.lcm(round_to or 1, per_group)
    # the cap is ours (``_GroupAverage``): Torch-Pruning's max_pruning_ratio binds only between
    # iterative steps, and the global share asked stays under it (``prune_flops``)
    cap = MAX_LAYER_CUT if ranking == "global" else 1.0
    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=_GroupAverage(imp, ranking == "layer", cap),
        pruning_ratio=ratio,
        ignored_layers=keep,
        round_to=round_to,
        customized_pruners={nn.GroupNorm: _group_norm_pruner()},
        global_pruning=ranking == "global",
    )
    if importance == "taylor" and not any(p.grad is not None for p in model.parameters()):
        raise ValueError("Taylor importance: expected gradients of training losses, found none")
    names = {m: n for n, m in net.named_modules()}
    widths = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    kept = {}  # traced name -> output channels kept (what reconstruction needs)
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            name = names.get(dep.target.module)
            if name in widths and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                gone = {int(i) for i in idxs}
                kept[name] = [c for c in range(widths[name]) if c not in gone]
        group.prune()
    model.zero_grad(set_to_none=True)
    model.eval()
    after = macs(net, example)
    report = {
        "flops_cut": 1 - after / macs0,
        "channel_ratio": ratio,
        "importance": importance,
        "scope": scope,
        "ranking": ranking,
        "round_to": round_to,
        "macs_before": macs0,
        "macs_after": after,
        "params_before": params0,
        "params_after": _params(model),
    }
    model.meta.pruned = report
    return report, kept


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

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    hooked_forward(net, example, [(m, hook) for m in net.modules() if isinstance(m, layers)])
    return int(total)


def hooked_forward(net: nn.Module, x: torch.Tensor, hooks: list[tuple[nn.Module, Callable]]):
    """One forward pass of ``net`` without gradients, with ``(module, forward hook)`` pairs
    attached for its duration."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
