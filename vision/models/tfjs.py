"""TF.js graph models (``model.json`` + binary weight shards), read without TensorFlow.

A graph model's ``model.json`` holds the topology (``modelTopology.node``: TensorFlow
``NodeDef``s as JSON) and a ``weightsManifest``: groups of shard files whose concatenated
bytes are the weights in manifest order. A weight is stored as its ``dtype`` or, when the
manifest gives a ``quantization``, as ``uint8``/``uint16`` (``value = q * scale + min``) or
``float16``; both are turned back into float32 here. The reader gives the nodes (with their
inputs by name) and the weights as NumPy arrays; a model port walks the nodes to find which
weight feeds which layer (see ``vision.models.nanodet``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# TF.js dtype names → NumPy storage types (as stored in the shards, before dequantization)
STORAGE = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "float16": np.float16,
}
# ops that pass their input through unchanged for the purpose of tracing the data flow
PASS_THROUGH = ("Identity", "Transpose")


class GraphModelError(ValueError):
    """A graph model's files do not hold what their manifest says."""


@dataclass
class Node:
    """One graph node: its op, its inputs (node names, ``:k`` output suffixes dropped) and its
    attributes as in the JSON (``{"i": ...}``, ``{"f": ...}``, ``{"list": ...}``)."""

    name: str
    op: str
    inputs: list[str]
    attr: dict = field(default_factory=dict)

    def ints(self, key: str) -> list[int]:
        """A list-of-ints attribute (strides, ksize, dilations)."""
        return [int(v) for v in self.attr.get(key, {}).get("list", {}).get("i", [])]

    def float(self, key: str, default: float | None = None) -> float | None:
        return float(self.attr[key]["f"]) if key in self.attr else default


@dataclass
class GraphModel:
    """A TF.js graph model: ``nodes`` by name (in file order) and float32/int ``weights``."""

    path: Path
    nodes: dict[str, Node]
    weights: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def consumers(self, name: str) -> list[Node]:
        """The nodes that read ``name``'s output, looking through Identity/Transpose."""
        out = []
        for n in self.nodes.values():
            if name in n.inputs:
                out.extend(self.consumers(n.name) if n.op in PASS_THROUGH else [n])
        return out

    def source(self, name: str) -> str:
        """The node that really produced ``name``: Identity/Transpose looked through."""
        node = self.nodes.get(name)
        while node is not None and node.op in PASS_THROUGH:
            name = node.inputs[0]
            node = self.nodes.get(name)
        return name

    def by_op(self, op: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.op == op]


def read_graph_model(path: str | Path) -> GraphModel:
    """Read ``model.json`` and its shards (beside it). Refuses, naming the file, a manifest
    whose shards are missing or hold a different number of bytes than the weights need, and
    a dtype or quantization it does not know."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GraphModelError(f"{path}: expected a TF.js model.json, got {e}") from e
    if spec.get("format") != "graph-model" or "modelTopology" not in spec:
        raise GraphModelError(
            f"{path}: expected format 'graph-model' with a modelTopology, got format "
            f"{spec.get('format')!r}"
        )
    weights: dict[str, np.ndarray] = {}
    for k, group in enumerate(spec.get("weightsManifest", [])):
        data = b"".join(_shard(path.parent / p, path) for p in group["paths"])
        weights.update(_unpack(data, group["weights"], f"{path} weightsManifest[{k}]"))
    nodes = {}
    for raw in spec["modelTopology"].get("node", []):
        inputs = [i.split(":")[0].lstrip("^") for i in raw.get("input", [])]
        nodes[raw["name"]] = Node(raw["name"], raw["op"], inputs, raw.get("attr", {}))
    meta = {k: spec[k] for k in ("generatedBy", "convertedBy", "signature") if k in spec}
    return GraphModel(path, nodes, weights, meta)


def _shard(file: Path, manifest: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise GraphModelError(
            f"{manifest}: its weights manifest names the shard {file.name}, which could not be "
            f"read ({e.strerror}); fix: keep the .bin files beside model.json"
        ) from e


def _unpack(data: bytes, entries: list[dict], where: str) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for e in entries:
        q = e.get("quantization")
        stored = (q or {}).get("dtype", e["dtype"])
        if stored not in STORAGE:
            raise GraphModelError(
                f"{where}: weight {e['name']!r}: expected a dtype in {sorted(STORAGE)}, got "
                f"{stored!r}"
            )
        dtype = np.dtype(STORAGE[stored]).newbyteorder("<")
        shape = [int(s) for s in e["shape"]]
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + count * dtype.itemsize
        if end > len(data):
            raise GraphModelError(
                f"{where}: weight {e['name']!r} {shape} {stored} needs bytes {offset}..{end}, "
                f"but the shards hold {len(data)} bytes"
            )
        arr = np.frombuffer(data, dtype, count, offset).reshape(shape)
        out[e["name"]] = _dequantize(arr, e, q)
        offset = end
    if offset != len(data):
        raise GraphModelError(
            f"{where}: expected {offset} bytes of weights (the manifest's shapes), got "
            f"{len(data)} in the shards"
        )
    return out


def _dequantize(arr: np.ndarray, entry: dict, q: dict | None) -> np.ndarray:
    if q is None:
        return arr.astype(arr.dtype.newbyteorder("="))
    if q["dtype"] == "float16":
        return arr.astype(np.float32)
    if "scale" not in q or "min" not in q:
        raise GraphModelError(
            f"weight {entry['name']!r}: {q['dtype']} quantization needs 'scale' and 'min', got "
            f"{sorted(q)}"
        )
    return (arr.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])).astype(
        np.float32
    )
