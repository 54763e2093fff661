"""Structured pruning: channels really go (parameters and FLOPs drop by the asked share), the
outputs keep their shape, training still runs, and a pruned checkpoint reloads through the
registry from what it records."""

from __future__ import annotations

import pytest
import torch

from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.predictor import Predictor
from vision.prune import prune_flops

# fcos_r18: as fcos_slim; the Lite0 models (the defaults) have depthwise and "SAME" convolutions
SUPPORTED = ["fcn8s_slim", "fcn32s", "dilated_slim", "fcos_slim", "fcn8s_lite0", "fcos_lite0",
             "dilated_lite0"]  # fmt: skip
SIZE = 96


@pytest.mark.parametrize("name", SUPPORTED)
def test_pruned_models_shrink_run_and_reload(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 4, input_size=SIZE)
    x = torch.rand(2, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        before = model(x)
    params = sum(p.numel() for p in model.parameters())
    report = prune_flops(model, 0.4)
    assert report["flops_cut"] == pytest.approx(0.4, abs=0.01)
    assert sum(p.numel() for p in model.parameters()) == report["params_after"] < params * 0.75
    model.eval()
    with torch.no_grad():
        after = model(x)
    if model.meta.task == "segmentation":
        assert after.shape == before.shape  # (B, classes + 1, H, W)
        model.train()
        model(x).mean().backward()
    else:
        assert all(set(a) == {"boxes", "scores", "labels"} for a in after)
        model.train()
        tg = [{"boxes": torch.tensor([[5.0, 5, 40, 40]]), "labels": torch.tensor([1])}] * 2
        sum(model(x, tg).values()).backward()
        from vision.engine.distill import Distiller  # the unpruned model can teach it

        assert Distiller(model, build_model(name, 4, input_size=SIZE)).adapter is not None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    path = tmp_path / "pruned.pt"
    save_checkpoint({"model": model.state_dict(), "meta": model.meta.as_dict(), "args": {}}, path)
    again = Predictor.from_checkpoint(path)  # rebuilt from the registry + recorded shapes
    assert again.model.meta.pruned["flops_cut"] == report["flops_cut"]
    model.eval()
    with torch.no_grad():
        a, b = model(x), again.model(x)
    if torch.is_tensor(a):
        assert torch.allclose(a, b, atol=1e-5)
    else:
        assert all(torch.allclose(p["scores"], q["scores"]) for p, q in zip(a, b, strict=True))
