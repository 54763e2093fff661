"""Checkpoints: plain dicts written atomically, read weights-only; partial (transfer) loading."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def rng_state() -> dict:
    """Every RNG a run draws from, as tensors and plain types (weights-only loadable)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(),
        "python": _py_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _np_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _py_state() -> list:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    v, s, g = state["python"]
    random.setstate((v, tuple(s), g))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(obj: dict, path: Path | str) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path | str, mmap: bool = False) -> dict:
    """Read a checkpoint with ``weights_only=True``: pickles that carry code are refused.
    ``mmap``: map the tensors instead of reading them (to look at a few fields quickly). The
    name of a model that ships its weights (``vision.models.zoo``, e.g. ``nanodet_coco``)
    gives that model's checkpoint."""
    from vision.models.zoo import is_pretrained, pretrained_checkpoint

    if is_pretrained(str(path)) and not Path(path).is_file():
        return pretrained_checkpoint(str(path))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: expected a file, got nothing there")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load every tensor whose name and shape match (transfer learning across class counts);
    returns the names loaded, skipped for shape, and missing from the checkpoint."""
    own = model.state_dict()
    loaded, mismatched = [], []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v
            loaded.append(k)
        elif k in own:
            mismatched.append(f"{k} {tuple(v.shape)} -> {tuple(own[k].shape)}")
    model.load_state_dict(own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    return {
        "loaded": loaded,
        "shape_mismatch": mismatched,
        "missing": missing,
        "unexpected": unexpected,
    }
