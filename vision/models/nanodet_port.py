"""The TF.js NanoDet graph's weights into ``NanoDetNet``, every tensor accounted for.

The graph's ``Conv2D`` nodes, in the order the export numbered them (``convolution``,
``convolution_1``, ...: the PyTorch network's execution order), are the network's
convolutions in module order. For each, its kernel (HWIO → OIHW), the bias of the ``Add``
that reads it, its stride, and the explicit ``Pad`` in front of it (the graph pads, then
convolves with VALID) are checked against the module; every LeakyReLU's alpha must be 0.1.
A float tensor the mapping did not use is an error: nothing in the graph is left out. The
graph takes BGR; its stem's input channels are reversed here so the port takes RGB.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vision.models.tfjs import GraphModel, GraphModelError, read_graph_model

NUM_CLASSES = 80


def conv_nodes(graph: GraphModel) -> list:
    def number(node) -> int:
        m = re.search(r"convolution(?:_(\d+))?$", node.name)
        if m is None:
            raise GraphModelError(f"{graph.path}: Conv2D node {node.name!r} is not numbered")
        return int(m.group(1) or 0)

    return sorted(graph.by_op("Conv2D"), key=number)


def port_weights(net: nn.Module, graph: GraphModel, num_classes: int = NUM_CLASSES) -> dict:
    """Copy the graph's weights into ``net`` (a ``NanoDetNet``). With ``num_classes`` other
    than 80 the heads' box rows are copied and the class rows keep their new initialization.
    Returns ``{"mapped": n, "structural": [names]}`` (the non-float constants: shapes, pads,
    axes)."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    rows = {}
    if num_classes != NUM_CLASSES:  # each head's box rows only
        rows = {id(m): (slice(NUM_CLASSES, None), slice(num_classes, None)) for m in net.outputs()}
    return port_convs(convs, graph, rows, bgr_stem=True)


def port_convs(convs: list[nn.Conv2d], graph: GraphModel, rows=None, bgr_stem=False) -> dict:
    """The graph's convolutions, in order, into ``convs``; ``rows``: ``{id(conv): (graph
    rows, module rows)}`` to copy part of a layer; ``bgr_stem``: the first takes BGR (its
    input channels are reversed for RGB)."""
    nodes = conv_nodes(graph)
    if len(nodes) != len(convs):
        raise GraphModelError(
            f"{graph.path}: expected {len(convs)} Conv2D nodes (the port's convolutions), got "
            f"{len(nodes)}"
        )
    _check_activations(graph)
    used: set[str] = set()
    for k, (node, conv) in enumerate(zip(nodes, convs, strict=True)):
        kernel, bias, names = _conv_tensors(graph, node)
        used.update(names)
        _check_geometry(graph, node, conv)
        w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        b = torch.from_numpy(bias.copy())
        if k == 0 and bgr_stem:
            w = w.flip(1)
        src, dst = (rows or {}).get(id(conv), (slice(None), slice(None)))
        _copy(conv.weight.data[dst], w[src], f"{node.name} kernel")
        _copy(conv.bias.data[dst], b[src], f"{node.name} bias")
    unused = [
        n
        for n, a in graph.weights.items()
        if n not in used and a.dtype == np.float32 and a.size > 1
    ]
    if unused:
        raise GraphModelError(f"{graph.path}: float tensors the port did not use: {unused}")
    return {"mapped": len(used), "structural": sorted(set(graph.weights) - used)}


def _conv_tensors(graph: GraphModel, node) -> tuple[np.ndarray, np.ndarray, list[str]]:
    kernel_name = graph.source(node.inputs[1])
    if kernel_name not in graph.weights:
        raise GraphModelError(f"{node.name}: expected a constant kernel, got {kernel_name!r}")
    adds = [n for n in graph.consumers(node.name) if n.op in ("Add", "AddV2", "BiasAdd")]
    bias_names = [i for n in adds for i in n.inputs if graph.source(i) in graph.weights]
    if len(bias_names) != 1:
        raise GraphModelError(f"{node.name}: expected one bias Add after it, got {bias_names}")
    bias_name = graph.source(bias_names[0])
    return graph.weights[kernel_name], graph.weights[bias_name], [kernel_name, bias_name]


def _check_geometry(graph: GraphModel, node, conv: nn.Conv2d) -> None:
    strides = node.ints("strides")[1:3]
    if tuple(strides) != tuple(conv.stride):
        raise GraphModelError(f"{node.name}: stride {strides}, the port's is {conv.stride}")
    pad_node = graph.nodes.get(graph.source(node.inputs[0]))
    pads = [0, 0]
    if pad_node is not None and pad_node.op in ("Pad", "PadV2"):
        amounts = graph.weights[graph.source(pad_node.inputs[1])]
        pads = [int(amounts[2][0]), int(amounts[3][0])]  # NCHW: rows 2, 3
        if int(amounts[2][0]) != int(amounts[2][1]) or int(amounts[3][0]) != int(amounts[3][1]):
            raise GraphModelError(f"{pad_node.name}: asymmetric padding {amounts.tolist()}")
    if tuple(pads) != tuple(conv.padding):
        raise GraphModelError(f"{node.name}: padding {pads}, the port's is {conv.padding}")


def _check_activations(graph: GraphModel) -> None:
    alphas = {n.float("alpha") for n in graph.by_op("LeakyRelu")}
    if alphas != {0.1} and alphas != set():
        raise GraphModelError(f"{graph.path}: expected LeakyReLU alpha 0.1, got {sorted(alphas)}")


def _copy(target: torch.Tensor, source: torch.Tensor, what: str) -> None:
    if tuple(target.shape) != tuple(source.shape):
        raise GraphModelError(
            f"{what}: expected shape {tuple(target.shape)} (the port's layer), got "
            f"{tuple(source.shape)} from the graph"
        )
    target.copy_(source)


def load_port(net: nn.Module, json_path: str | Path, num_classes: int = NUM_CLASSES) -> dict:
    with torch.no_grad():
        return port_weights(net, read_graph_model(json_path), num_classes)
