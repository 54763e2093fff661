"""Data pipeline throughput: decode + augment + collate, images/s, for both tasks.

    .venv/bin/python -m bench.data_pipeline [--data datasets/shapes.yaml] [--size 160]
        [--batch 16] [--workers 0 2] [--repeats 3] [--out bench/results/data_pipeline.json]

Baseline in the same run: decode alone (Pillow), so the ratio shows what augmentation costs.
Quotes the median of ``--repeats`` passes; generates a small shapes set if none exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vision.config import load_config, parse_config
from vision.data.build import build_dataset
from vision.data.io import read_image
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_segmentation,
)


def _images_per_s(loader, n_images: int) -> float:
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--split", default="train")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/data_pipeline.json")
    a = ap.parse_args()
    cfg = load_config(a.data)
    if not cfg.root.is_dir() and cfg.name == "shapes":
        from vision.data.shapes import ShapesSpec, generate

        tmp = Path("bench/results/shapes")
        generate(tmp, ShapesSpec(train=a.limit, val=16))
        cfg = parse_config(
            {
                **cfg.__dict__,
                "root": str(tmp / "VOC"),
                "detection": cfg.detection,
                "segmentation": cfg.segmentation,
                "format": cfg.format,
            }
        )
    torch.set_num_threads(1)
    results = {"size": a.size, "batch": a.batch, "limit": a.limit, "runs": {}}
    for task, tf, collate in (
        ("detection", DetectionTransform, collate_detection),
        ("segmentation", SegmentationTransform, collate_segmentation),
    ):
        ds = build_dataset(cfg, task, a.split)
        idx = list(range(min(a.limit, len(ds))))
        sub = torch.utils.data.Subset(TransformedDataset(ds, tf(a.size, train=True)), idx)
        paths = [ds.samples[i].path for i in idx]
        decode = [len(paths) / _timed(_decode_all, paths) for _ in range(a.repeats)]
        results["runs"][f"{task}/decode_only"] = statistics.median(decode)
        for w in a.workers:
            loader = torch.utils.data.DataLoader(
                sub, batch_size=a.batch, num_workers=w, collate_fn=collate, persistent_workers=w > 0
            )
            rates = [_images_per_s(loader, len(idx)) for _ in range(a.repeats + (w > 0))]
            rates = rates[1:] if w > 0 else rates  # first pass starts the workers
            results["runs"][f"{task}/workers={w}"] = statistics.median(rates)
    base = {t: results["runs"][f"{t}/decode_only"] for t in ("detection", "segmentation")}
    print(f"{'pipeline':<32}{'images/s':>10}{'vs decode':>11}")
    for k, v in results["runs"].items():
        print(f"{k:<32}{v:>10.1f}{v / base[k.split('/')[0]]:>10.2f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {a.out}")


def _decode_all(paths) -> None:
    for p in paths:
        read_image(p)


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
