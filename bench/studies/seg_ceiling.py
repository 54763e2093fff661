"""The mIoU ceiling of a segmenter's output grid: an oracle that knows every pixel's class but
can only answer on the model's output grid (input size / output stride), as FCN-8s and the
dilated models do before their final upsampling.

    .venv/bin/python -m bench.studies.seg_ceiling [--data shapes] [--sizes 96 128 160 192 256]
        [--stride 8] [--out bench/results/seg_ceiling.json]

Each validation mask is letterboxed like the predictor does (longest side = size), reduced to
the output grid by area averaging of the one-hot class map, upsampled back to the original
pixels bilinearly and arg-maxed, then scored with the project's own mIoU evaluator. A model at
that size and stride cannot be expected to beat the figure; stride 1 shows what the input size
alone costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from eval.seg import SegEvaluator
from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.sample import mask_classes
from vision.postprocess import valid_size


def oracle_mask(mask: torch.Tensor, k: int, size: int, stride: int) -> torch.Tensor:
    """The best answer on a ``size / stride`` grid for a (H, W) class mask with ``k`` classes."""
    h, w = mask.shape
    grid = valid_size({"orig_size": (h, w), "scale": size / max(h, w) / stride})
    valid = (mask.long() < k).float()  # void (255) casts no vote
    onehot = F.one_hot(mask.long().clamp(0, k - 1), k).permute(2, 0, 1)[None].float() * valid
    small = F.interpolate(onehot, size=grid, mode="area")
    up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return up.argmax(1)[0].to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160, 192, 256])
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--out", default="bench/results/seg_ceiling.json")
    a = ap.parse_args()
    cfg = load_config(a.data)
    reader = build_dataset(cfg, "segmentation", "val")
    classes = mask_classes(
        cfg.names, cfg.background
    )  # background first unless the dataset has none (CamVid)
    k = len(classes)
    masks = [torch.from_numpy(reader[i].mask) for i in range(len(reader))]
    rows = []
    for size in a.sizes:
        for stride in sorted({1, a.stride}):
            ev = SegEvaluator(k, classes)
            for i, m in enumerate(masks):
                ev.process(
                    [{"mask": m.numpy(), "image_id": i}],
                    [{"mask": oracle_mask(m, k, size, stride).numpy()}],
                )
            res = ev.evaluate()["seg"]
            rows.append(
                {
                    "size": size,
                    "stride": stride,
                    "grid": size // stride,
                    "mIoU": res["mIoU"],
                    "per_class_iou": res["per_class_iou"],
                }
            )
            print(
                f"input {size:4d} px, stride {stride}: grid {size // stride:3d}, "
                f"oracle mIoU {res['mIoU']:.4f}; "
                + " ".join(f"{c} {v:.3f}" for c, v in res["per_class_iou"].items())
            )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps({"data": cfg.name, "images": len(masks), "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
