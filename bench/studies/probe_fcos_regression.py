"""The first training steps of a small FCOS detector: regression loss, share of box sides alive
(ReLU input > 0), bias of the side outputs and the gradient norm of their weights.

    .venv/bin/python -m bench.studies.probe_fcos_regression fcos_lite0 coco128 40 [--bias 0]

``--bias`` overrides the initial bias of the side outputs (0 is torchvision's own; the project's
detectors start at 1, ``vision.models.detection.REG_BIAS``). Recipe of the COCO128 suite's
first run: AdamW at 2e-3, the backbone at a quarter, linear warm-up over 50 steps from 0.1 %,
batch 8, training augmentation. This is how the dead box regression on COCO128 was found.
"""

from __future__ import annotations

import argparse

import torch

from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.transforms import DetectionTransform, TransformedDataset, collate_detection
from vision.engine.train import backbone_parameters
from vision.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("steps", type=int)
    ap.add_argument("--bias", type=float, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=320)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(a.data)
    ds = TransformedDataset(
        build_dataset(cfg, "detection", "train"), DetectionTransform(a.size, train=True), seed=0
    )
    model = build_model(a.model, len(cfg.names), class_names=cfg.names, input_size=a.size).train()
    head = model.net.head.regression_head
    if a.bias is not None:
        torch.nn.init.constant_(head.bbox_reg.bias, a.bias)
    body = {id(p) for p in backbone_parameters(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in body], "lr": a.lr},
        {"params": [p for p in model.parameters() if id(p) in body], "lr": a.lr / 4},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    seen: dict[str, torch.Tensor] = {}
    head.bbox_reg.register_forward_hook(lambda m, i, o: seen.__setitem__("raw", o.detach()))
    pick = torch.Generator().manual_seed(0)
    for step in range(a.steps):
        warm = min(1.0, 0.001 + 0.999 * step / 50)
        for g, lr in zip(opt.param_groups, (a.lr, a.lr / 4), strict=True):
            g["lr"] = lr * warm
        idx = torch.randint(len(ds), (8,), generator=pick).tolist()
        images, targets = collate_detection([ds[i] for i in idx])[:2]
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        grad = float(head.bbox_reg.weight.grad.norm())
        opt.step()
        if step % 5 == 0 or step == a.steps - 1:
            raw = seen["raw"]
            parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            print(
                f"step {step:3d}  {parts}  alive {float((raw > 0).float().mean()):.3f}  "
                f"mean side {float(raw.mean()):.3f}  bias "
                f"{[round(b, 4) for b in head.bbox_reg.bias.tolist()]}  grad {grad:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
