"""The trained models on CUDA (float32 and float16) against the CPU: metrics, agreement, speed.

    .venv/bin/python -m bench.gpu_check \
        --checkpoint reports/default_gpu/runs/shapes__fcos_r18/best.pt \
        --checkpoint reports/default_gpu/runs/shapes__fcn8s_slim/best.pt \
        [--out bench/results/gpu.json]

For each checkpoint and each of ``cpu`` float32 (the reference), ``cuda`` float32 and ``cuda``
float16: the validation metrics of its task (the same evaluators as the leaderboard), how far
the predictions agree with the CPU's (segmentation: share of pixels with the same class;
detection: share of CPU boxes at score ≥ 0.3 that have a box of the same class at IoU ≥ 0.9),
and the FPS protocol's figures (p50 per image, images/s) at several batch sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from eval.fps import measure
from eval.metrics import PRIMARY, primary_value, score
from eval.variants import agreement
from vision.config import load_config
from vision.data.build import build_dataset
from vision.predictor import Predictor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", action="append", required=True)
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--devices", default="cpu,cuda,cuda-half", help="cpu first: the reference")
    ap.add_argument("--batch", default="1,8,32", help="FPS protocol batch sizes")
    ap.add_argument("--limit", type=int, default=None, help="validation images (default all)")
    ap.add_argument("--out", default="bench/results/gpu.json")
    a = ap.parse_args()
    cfg = load_config(a.data)
    batches = tuple(int(b) for b in a.batch.split(","))
    out = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "runs": [],
    }
    readers: dict[str, object] = {}  # one per task: every device reads the same images
    for ckpt in a.checkpoint:
        ref = None
        for name in a.devices.split(","):
            device, half = name.removesuffix("-half"), name.endswith("-half")
            pred = Predictor.from_checkpoint(ckpt, device, half=half)
            if pred.task not in readers:
                readers[pred.task] = build_dataset(cfg, pred.task, "val")
                readers[pred.task].limit(a.limit)
            reader = readers[pred.task]
            t0 = time.perf_counter()
            metrics, kept = score(pred, reader, cfg.names, keep=len(reader))
            preds = [{k: v.cpu() for k, v in r.items()} for r in kept]
            seconds = time.perf_counter() - t0
            ref = ref if ref is not None else preds
            images = [s.path.read_bytes() for s in reader.samples[:64]]
            fps = measure(pred, images, batches, 5, 30)
            row = {
                "model": pred.meta.name,
                "device": name,
                "primary": PRIMARY[pred.task],
                "value": primary_value(pred.task, metrics),
                "agreement_with_cpu": agreement(pred.task, ref, preds),
                "eval_seconds": round(seconds, 2),
                "fps": [
                    {
                        "batch": r["batch"],
                        "p50_ms_per_image": r["total_ms"]["p50"] / r["batch"],
                        "images_per_s": r["images_per_s"],
                        "infer_ms_p50": r["stages_ms"]["inference"]["p50"],
                    }
                    for r in fps["runs"]
                ],
            }
            out["runs"].append(row)
            print(
                f"[gpu] {row['model']:<12} {name:<10} {row['primary']} {row['value']:.4f} "
                f"agree {row['agreement_with_cpu']:.4f}  "
                + "  ".join(
                    f"b{f['batch']}: {f['p50_ms_per_image']:.2f} ms/img {f['images_per_s']:.0f}/s"
                    for f in row["fps"]
                ),
                flush=True,
            )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"[gpu] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
