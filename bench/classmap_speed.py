"""The segmentation post-processing (class map at the original size) against the dense baseline.

    .venv/bin/python -m bench.classmap_speed [--checkpoint CKPT] [--data shapes] [--images 50]

A trained segmenter's real outputs on validation images; per image, timed in interleaved
rounds: the baseline (``F.interpolate`` of every logit to the original size, then the argmax,
in torch: what a user writes) and ``vision.postprocess.mask_to_original`` (argmax at low
resolution, logits interpolated only on class edges, NumPy). Every class map must equal the
baseline's. Prints medians per image and the ratio; writes ``bench/results/classmap_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vision.config import load_config
from vision.data.build import build_dataset
from vision.postprocess import mask_to_original, valid_size
from vision.predictor import Predictor

DEFAULT = "reports/default/runs/shapes__fcn8s_lite0/best.pt"


def dense(logits: torch.Tensor, info: dict) -> torch.Tensor:
    """The baseline: crop the padding, upsample every logit, argmax."""
    rh, rw = valid_size(info)
    up = F.interpolate(logits[None, :, :rh, :rw], size=info["orig_size"], mode="bilinear")
    return up[0].argmax(0).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=DEFAULT)
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench/results/classmap_speed.json")
    a = ap.parse_args()
    pred = Predictor.from_checkpoint(a.checkpoint)
    reader = build_dataset(load_config(a.data), "segmentation", "val")
    outputs = []
    for i in range(min(a.images, len(reader))):
        x, info = pred.preprocess([reader[i].image])
        outputs.append((pred.infer(x)[0], info[0]))
    for raw, info in outputs:  # parity first: a fast wrong map is no result
        if not torch.equal(mask_to_original(raw, info)["mask"], dense(raw, info)):
            raise SystemExit(f"class maps differ on an image of size {info['orig_size']}")
    times: dict[str, list[float]] = {"dense": [], "ours": []}
    for _ in range(a.rounds):
        for name, fn in (("dense", dense), ("ours", mask_to_original)):
            t = time.perf_counter()
            for raw, info in outputs:
                fn(raw, info)
            times[name].append((time.perf_counter() - t) * 1000 / len(outputs))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "checkpoint": a.checkpoint,
        "data": a.data,
        "images": len(outputs),
        "classes": int(outputs[0][0].shape[0]),
        "orig_sizes": sorted({tuple(i["orig_size"]) for _, i in outputs})[:5],
        "threads": torch.get_num_threads(),
        "ms_per_image": times,
        "median_ms": med,
        "speedup": med["dense"] / med["ours"],
        "identical": True,
    }
    print(
        f"class map per image ({len(outputs)} images, {res['classes']} classes): "
        f"dense {med['dense']:.3f} ms, ours {med['ours']:.3f} ms, {res['speedup']:.2f}x; "
        "identical maps"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
