"""Least-squares reconstruction of a pruned network's convolutions (He et al., ICCV 2017
"Channel pruning"; Luo et al., ICCV 2017 "ThiNet"): layer after layer, in the order the forward
pass reaches them, each convolution's weights are refitted so that, fed what the pruned network
now gives it, it reproduces what the unpruned network's same layer gave on the same images (its
kept output channels). The error of the layers above is then absorbed below instead of adding
up, and fine-tuning starts much closer to the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vision.prune import hooked_forward, traced_network


def _fitted(m: nn.Module) -> bool:
    """Plain convolutions that mix channels (depthwise ones only rescale theirs; subclasses
    such as EfficientNet's "SAME" convolution pad in forward and stay as they are)."""
    return type(m) is nn.Conv2d and m.groups == 1


def _order(net: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the fitted convolutions in the order one forward pass first calls them."""
    seen: list[str] = []
    first = [
        (m, lambda *_, n=n: seen.append(n) if n not in seen else None)
        for n, m in net.named_modules()
        if _fitted(m)
    ]
    hooked_forward(net, example, first)
    return seen


@torch.no_grad()
def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    images: Sequence[torch.Tensor],
    kept: dict[str, list[int]],
    positions: int = 96,
    ridge: float = 1e-2,
) -> int:
    """Refit every plain convolution of ``pruned`` (both networks as traced by
    ``vision.prune``: the same module names, ``pruned`` narrower) from ``images`` (batches of
    [0, 1] images). ``kept[name]``: the output channels of ``original``'s layer that ``pruned``
    kept (absent: all). ``positions`` output positions are sampled per image and call, the
    same in both networks. Returns the number of layers refitted."""
    net, ref = traced_network(pruned)[0].eval(), traced_network(original)[0].eval()
    names = _order(net, images[0][:1])
    layers, refs = dict(net.named_modules()), dict(ref.named_modules())
    # the original never changes: one pass per batch gives every layer's targets
    wanted = {name: refs[name] for name in names}
    targets = [_sampled_outputs(ref, wanted, x, positions, b) for b, x in enumerate(images)]
    for name in names:
        conv = layers[name]
        cols = [_sampled_inputs(net, conv, im, positions, b) for b, im in enumerate(images)]
        y = torch.cat([t[name] for t in targets])
        _fit(conv, torch.cat(cols), y[:, kept[name]] if name in kept else y, ridge)
    return len(names)


def _sampled(t: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Rows (B·n, C) of ``t`` (B, C, L) at ``n`` positions drawn by ``seed``: the same
    positions for a layer's outputs and for the patches it reads."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(t.shape[2], generator=g)[: min(n, t.shape[2])]
    return t[:, :, idx].permute(0, 2, 1).reshape(-1, t.shape[1])


def _sampled_outputs(net, layers: dict[str, nn.Module], x, n, batch) -> dict[str, torch.Tensor]:
    """Each layer's outputs at ``n`` positions per image and call, in one forward pass."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def grab(name: str):
        def hook(m, i, o):
            out[name].append(_sampled(o.flatten(2), n, 1000 * batch + len(out[name])))

        return hook

    hooked_forward(net, x, [(m, grab(name)) for name, m in layers.items()])
    return {name: torch.cat(v) for name, v in out.items()}


def _sampled_inputs(net, layer: nn.Conv2d, x, n, batch) -> torch.Tensor:
    """The patches ``layer`` reads at the same positions as ``_sampled_outputs``."""
    out: list[torch.Tensor] = []

    def hook(m, i, o):  # the patches (B, D, L): one column per output position
        cols = F.unfold(i[0], layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        out.append(_sampled(cols, n, 1000 * batch + len(out)))

    hooked_forward(net, x, [(layer, hook)])
    return torch.cat(out)


@torch.no_grad()
def _fit(conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, ridge: float) -> None:
    """Least squares ``y ≈ x Wᵀ (+ b)`` in float64, with a ridge pulling W towards the weights
    the layer has (Torch-Pruning's slice of the original): where a deep, low-resolution layer
    gives fewer samples than it has inputs, the fit stays near them instead of overfitting.
    The ridge is relative to the mean diagonal of xᵀx (scale-free)."""
    x, y = x.double(), y.double()
    w0 = conv.weight.detach().reshape(conv.out_channels, -1).double()
    if conv.bias is not None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        w0 = torch.cat([w0, conv.bias.detach().double()[:, None]], 1)
    gram = x.T @ x
    lam = ridge * gram.diagonal().mean()
    gram += lam * torch.eye(len(gram), dtype=x.dtype)
    w = torch.linalg.solve(gram, x.T @ y + lam * w0.T).T  # (C_out, D [+ 1])
    if conv.bias is not None:
        conv.bias.copy_(w[:, -1])
        w = w[:, :-1]
    conv.weight.copy_(w.reshape(conv.weight.shape))
