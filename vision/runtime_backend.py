"""A runtime session as a ``Predictor`` backend (torch on both sides of it): what
``deploy.OrtBackend`` and ``deploy_openvino.OvBackend`` share."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vision.runtime_predictor import OrtSession


class SessionBackend:
    """A runtime session (``vision.runtime_predictor``) as a ``Predictor`` backend: torch
    tensor in, the eager model's raw output out (the model's ``export_decoder`` turns the
    graph's outputs into it: a detector's decoding, a segmenter's logits as they are). The
    runtime's threads follow torch's count unless ``threads`` is given."""

    SESSION: type = OrtSession  # OvBackend: OpenVinoSession

    def __init__(self, path: Path | str, model: nn.Module, threads: int | None = None):
        self.session = self.SESSION(path, threads or torch.get_num_threads())
        self.path = self.session.path  # the file it runs (what a caller checks it loaded)
        self.decoder = model.export_decoder(model.meta.input_size)

    def __call__(self, x: torch.Tensor):
        outs = self.session(x.detach().float().cpu().contiguous().numpy())
        return self.decoder([torch.from_numpy(o) for o in outs])
