"""Quality on the built-in dataset (and the real raccoon set), measured by training from
random init on this machine.

    .venv/bin/python -m bench.quality --suite detector      # default detector, COCO mAP
    .venv/bin/python -m bench.quality --suite segmenters    # FCN-8s and dilated (slim), mIoU
    .venv/bin/python -m bench.quality --suite segmenters_r18  # the same on ResNet-18
    .venv/bin/python -m bench.quality --suite upsampling    # transposed vs bilinear table
    .venv/bin/python -m bench.quality --suite upsampling_slim  # the same, slim, 5 epochs each
    .venv/bin/python -m bench.quality --suite raccoon       # default detector on real photos
    .venv/bin/python -m bench.quality --suite pretrained_shapes  # ImageNet Lite0, main job's time
    .venv/bin/python -m bench.quality --suite gpu --workers 6  # on a CUDA machine: 5-minute recipes

Each run records its wall time (training + per-epoch validation), the final metrics, the
parameter count and the batch-1 latency (FPS protocol, p50). Results: bench/results/*.json and
a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from eval.fps import measure
from eval.metrics import PRIMARY, build_evaluator
from vision.engine.train import TrainConfig, train
from vision.predictor import Predictor

DET = {
    "task": "detection",
    "model": "fcos_r18",
    "img_size": 160,
    "batch": 8,
    "lr": 2e-3,
    "warmup_iters": 50,
    # bfloat16 autocast (1.3x images/s here) buys a 4th epoch: COCO AP 0.483 vs 0.364 for
    # 3 float32 epochs, both about 5 minutes
    "epochs": 4,
    "bf16": True,
    "val_every": 2,
}
SEG = {
    "task": "segmentation",
    "img_size": 160,
    "batch": 8,
    "lr": 2e-3,
    "epochs": 3,
    "warmup_iters": 50,
}
# the slim backbone (half of ResNet-18's widths) learns as much per epoch and runs 3x faster,
# so it gets 3x the epochs in the same minutes; small batches and a high rate learn fastest
# here; cross-entropy + Dice: fcn8s_slim 0.738 vs 0.720 (CE) in the same 9 epochs,
# dilated_slim 0.401 vs 0.342 in 4
SLIM = {**SEG, "img_size": 128, "lr": 1e-2, "warmup_iters": 100, "seg_loss": "ce+dice"}
UPSAMPLING = [
    {
        **SEG,
        "model": m,
        "epochs": 2,
        "img_size": 128,
        "limit_train": 1000,
        "model_kwargs": {"upsample": u},
    }
    for m in ("fcn32s", "fcn16s", "fcn8s", "dilated_context")
    for u in ("transposed", "bilinear")
]
# the upsampling comparison on the slim backbone with the default segmenter's recipe (5 epochs
# each instead of 9, so the 8 runs take about half an hour)
UPSAMPLING_SLIM = [
    {**SLIM, "model": m, "epochs": 5, "model_kwargs": {**kw, "upsample": u}}
    for m, kw in (
        ("fcn32s", {"backbone": "resnet_slim"}),
        ("fcn16s", {"backbone": "resnet_slim"}),
        ("fcn8s", {"backbone": "resnet_slim"}),
        ("dilated_slim", {}),
    )
    for u in ("transposed", "bilinear")
]
# On an H100 (float16 AMP) each of these met its quality target in under 5 minutes
# (bench/records/h100_2026-11-22): fcos_r18 COCO AP 0.765 in 4.0 min, fcn8s_slim mIoU 0.915 in
# 4.1 min, dilated_slim 0.915 in 3.6 min. Larger inputs than on the CPU: the stride-8 output grid
# caps mIoU at 0.946 at 256 px (bench/studies/seg_ceiling.py), 0.865 at 128.
GPU = [
    {
        **DET,
        "img_size": 192,
        "batch": 32,
        "lr": 4e-3,
        "warmup_iters": 100,
        "epochs": 20,
        "bf16": False,
        "val_every": 5,
    },
    {**SLIM, "model": "fcn8s_slim", "img_size": 256, "batch": 16, "epochs": 48, "val_every": 8},
    {**SLIM, "model": "dilated_slim", "img_size": 320, "batch": 16, "epochs": 36, "val_every": 6},
]
SUITES = {
    "detector": [DET],
    "segmenters": [
        {**SLIM, "model": "fcn8s_slim", "epochs": 9},
        {**SLIM, "model": "dilated_slim", "epochs": 4},
    ],
    "segmenters_r18": [{**SEG, "model": "fcn8s"}, {**SEG, "model": "dilated_context"}],
    "upsampling": UPSAMPLING,
    "upsampling_slim": UPSAMPLING_SLIM,
    "gpu": GPU,
    # the ImageNet-pretrained Lite0 models in about the main job's minutes (fcos_r18: 4 epochs in
    # ~5 min, fcn8s_slim: 9 in ~4.5): Lite0 trains 2-4x slower per image here even in
    # channels-last float32 (its fastest setting), so 3 and 4 epochs
    "pretrained_shapes": [
        {
            **DET,
            "model": "fcos_lite0",
            "epochs": 3,
            "val_every": 1,
            "backbone_lr_mult": 0.25,
            "bf16": False,
            "channels_last": True,
        },
        {
            **SLIM,
            "model": "fcn8s_lite0",
            "epochs": 4,
            "backbone_lr_mult": 0.25,
            "channels_last": True,
        },
    ],
    "raccoon": [
        {**DET, "data": "raccoon", "epochs": 30, "img_size": 224, "bf16": False, "val_every": 1}
    ],
}


def run_one(spec: dict, out_root: Path, workers: int) -> dict:
    name = spec["model"] + "".join(f"_{v}" for v in spec.get("model_kwargs", {}).values())
    name += f"_{spec.get('data', 'shapes')}_{spec['img_size']}px"
    cfg = TrainConfig(
        data=spec.get("data", "shapes"),
        out=str(out_root / name),
        workers=workers,
        **{k: v for k, v in spec.items() if k != "data"},
    )
    t0 = time.perf_counter()
    summary = train(cfg, build_evaluator)
    wall = time.perf_counter() - t0
    pred = Predictor.from_checkpoint(out_root / name / "last.pt")
    jpgs = [
        Path(p).read_bytes()
        for p in sorted((Path("datasets/shapes/VOC/JPEGImages")).glob("*.jpg"))[:16]
    ]
    fps = measure(pred, jpgs, (1,), 3, 20)["runs"][0]
    result = {
        "name": name,
        "spec": spec,
        "wall_s": wall,
        "metrics": summary,
        "primary": summary[PRIMARY[spec["task"]]],
        "params_m": sum(p.numel() for p in pred.model.parameters()) / 1e6,
        "ms_per_image_p50": fps["total_ms"]["p50"],
        "inference_ms_p50": fps["stages_ms"]["inference"]["p50"],
    }
    if spec["task"] == "detection":  # validation scored every protocol of the task
        result["voc07_mAP"], result["voc12_mAP"] = summary["voc07/mAP"], summary["voc12/mAP"]
        result["coco_AP50"] = summary["coco/AP50"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    out = Path(a.out or f"bench/results/quality_{a.suite}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in SUITES[a.suite]:  # written after each run: a long suite keeps what finished
        results.append(run_one(spec, Path("runs/quality"), a.workers))
        out.write_text(json.dumps(results, indent=1))
    print("| run | primary metric | wall s | params M | ms/image p50 (batch 1) |")
    print("|---|---|---|---|---|")
    for r in results:
        extra = (
            f" (VOC07 {r['voc07_mAP']:.3f}, VOC12 {r['voc12_mAP']:.3f})" if "voc07_mAP" in r else ""
        )
        print(
            f"| {r['name']} | {PRIMARY[r['spec']['task']]} {r['primary']:.4f}{extra} | "
            f"{r['wall_s']:.0f} | {r['params_m']:.2f} | {r['ms_per_image_p50']:.1f} |"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
