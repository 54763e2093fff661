"""Batch-1 latency of several checkpoints, measured in interleaved rounds (medians), so that
the machine's drift between minutes falls on every model alike.

    .venv/bin/python -m bench.latency runs/quality/*/best.pt [--rounds 5] [--iters 30]

Each round times every model once with the FPS protocol (decode → preprocess → inference →
postprocess) on the same validation images; the table gives the median over rounds of each
model's p50, and the ratio to the first checkpoint. JSON: bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from eval.fps import measure
from vision.predictor import Predictor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--images", default="datasets/shapes/VOC/JPEGImages")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/latency.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    images = [p.read_bytes() for p in sorted(Path(a.images).glob("*.jpg"))[-16:]]
    preds = {c: Predictor.from_checkpoint(c) for c in a.checkpoints}
    p50: dict[str, list[float]] = {c: [] for c in a.checkpoints}
    inf50: dict[str, list[float]] = {c: [] for c in a.checkpoints}
    for _ in range(a.rounds):
        for c, pred in preds.items():
            run = measure(pred, images, (1,), 5, a.iters)["runs"][0]
            p50[c].append(run["total_ms"]["p50"])
            inf50[c].append(run["stages_ms"]["inference"]["p50"])
    base = statistics.median(p50[a.checkpoints[0]])
    rows = []
    print("| checkpoint | params M | ms/image p50 | inference ms p50 | vs first |")
    print("|---|---|---|---|---|")
    for c, pred in preds.items():
        row = {
            "checkpoint": c,
            "params_m": sum(p.numel() for p in pred.model.parameters()) / 1e6,
            "ms_p50": statistics.median(p50[c]),
            "inference_ms_p50": statistics.median(inf50[c]),
            "rounds": p50[c],
        }
        rows.append(row)
        print(
            f"| {c} | {row['params_m']:.2f} | {row['ms_p50']:.1f} | "
            f"{row['inference_ms_p50']:.1f} | {row['ms_p50'] / base:.2f}x |"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "rows": rows}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
