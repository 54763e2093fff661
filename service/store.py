"""Models in the BentoML store as the rest of the project loads them: the checkpoint file, the
deployable variant promotion chose and its ONNX file, and the store's metadata."""

from __future__ import annotations

from dataclasses import dataclass

import bentoml

from service.launch import STORE


@dataclass(frozen=True)
class StoredModel:
    tag: str
    checkpoint: str
    variant: str
    file: str | None
    metadata: dict


def looks_like_tag(name: str) -> bool:
    """``vision-detector``, ``vision-segmenter:latest`` or ``NAME:VERSION`` (no path parts)."""
    return "/" not in name and (name in STORE.values() or name.count(":") == 1)


def stored_model(tag: str) -> StoredModel | None:
    """The store model ``tag`` (``NAME`` means ``NAME:latest``), or None when the store has
    none."""
    try:
        bm = bentoml.models.get(tag if ":" in tag else f"{tag}:latest")
    except bentoml.exceptions.NotFound:
        return None
    meta = dict(bm.info.metadata)
    file = bm.path_of(meta["variant_file"]) if meta.get("variant_file") else None
    return StoredModel(
        str(bm.tag), bm.path_of("model.pt"), meta.get("variant", "eager"), file, meta
    )
