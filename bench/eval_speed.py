"""Evaluation speed at COCO and VOC2007-test scale, against the reference tools in one run.

    .venv/bin/python -m bench.eval_speed [--images 5000] [--repeats 3] [--skip-pycocotools]

COCO: a synthetic problem shaped like val2017 (5000 images, ~37k GT boxes, 80 classes, 100
detections per image) is written to JSON; pycocotools, faster-coco-eval and ``vision eval coco``
(``eval.coco.coco_evaluate`` from the files, validation included) are timed end to end from
the files, and the 12 stats must be identical. VOC: 4952 images, 20 classes; our vectorized
devkit matcher against a literal per-detection devkit loop (the test suite's reference).
Prints medians and ratios, writes ``bench/results/eval_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np


def make_coco(n_images: int, seed: int = 0) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        w, h = int(rng.integers(320, 640)), int(rng.integers(320, 640))
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"})
        n = int(rng.poisson(7.4))
        gts = []
        for _ in range(n):
            bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            c = int(rng.integers(1, 81))
            gts.append((x, y, bw, bh, c))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
        for k in range(100):
            if gts and k < 3 * len(gts):
                x, y, bw, bh, c = gts[k % len(gts)]
                j = rng.normal(0, 0.1, 4) * [bw, bh, bw, bh]
                box = [x + j[0], y + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)]
            else:
                bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
                box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh]
                c = int(rng.integers(1, 81))
            dets.append(
                {
                    "image_id": i,
                    "category_id": c,
                    "bbox": [float(v) for v in box],
                    "score": float(rng.random()),
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, 81)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def run_pycocotools(gt_path, dt_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def run_faster(gt_path, dt_path):
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(gt_path))
    ev = COCOeval_faster(gt, gt.loadRes(str(dt_path)), "bbox", print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return list(ev.stats[:12])


def run_ours(gt_path, dt_path):
    from eval.coco import STAT_NAMES, coco_evaluate

    r = coco_evaluate(gt_path, dt_path, "bbox", "faster")
    return [r[k] for k in STAT_NAMES]


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def voc_problem(n_images: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    gts, dets = {}, []
    for i in range(n_images):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(10, 200, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).round()
        labels = rng.integers(0, 20, n)
        gts[f"{i:06d}"] = {"boxes": boxes, "labels": labels, "difficult": rng.random(n) < 0.1}
        for _ in range(30):
            j = int(rng.integers(n))
            b = boxes[j] + rng.normal(0, 8, 4) if rng.random() < 0.5 else np.r_[xy[j], xy[j] + 50]
            b[2:] = np.maximum(b[2:], b[:2])  # detectors emit x2 >= x1
            dets.append(
                {
                    "image_id": f"{i:06d}",
                    "label": int(labels[j] if rng.random() < 0.7 else rng.integers(20)),
                    "box": b.tolist(),
                    "score": float(rng.random()),
                }
            )
    return gts, dets


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--voc-images", type=int, default=4952)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-pycocotools", action="store_true")
    ap.add_argument("--out", default="bench/results/eval_speed.json")
    a = ap.parse_args()
    work = Path("bench/results")
    work.mkdir(parents=True, exist_ok=True)
    gt, dets = make_coco(a.images)
    gt_path, dt_path = work / "bench_gt.json", work / "bench_dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    print(
        f"COCO problem: {len(gt['images'])} images, {len(gt['annotations'])} GT, "
        f"{len(dets)} detections, 80 classes"
    )
    res: dict = {
        "coco": {
            "images": len(gt["images"]),
            "gt": len(gt["annotations"]),
            "detections": len(dets),
        },
        "voc": {},
    }
    times: dict[str, list[float]] = {"faster-coco-eval": [], "vision eval coco": []}
    stats = {}
    if not a.skip_pycocotools:
        t, stats["pycocotools"] = timed(run_pycocotools, gt_path, dt_path)
        times["pycocotools"] = [t]
    for _ in range(a.repeats):  # round-robin so machine noise hits both alike
        t, stats["faster-coco-eval"] = timed(run_faster, gt_path, dt_path)
        times["faster-coco-eval"].append(t)
        t, stats["vision eval coco"] = timed(run_ours, gt_path, dt_path)
        times["vision eval coco"].append(t)
    ref = stats.get("pycocotools", stats["faster-coco-eval"])
    for name, s in stats.items():
        diff = float(np.max(np.abs(np.array(s) - np.array(ref))))
        assert diff < 1e-12, f"{name} stats differ from the reference by {diff}"
    base = statistics.median(times["faster-coco-eval"])
    print(f"{'COCO bbox':<22}{'median s':>10}{'runs':>6}{'vs faster-coco-eval':>22}")
    for name, ts in times.items():
        med = statistics.median(ts)
        res["coco"][name] = {"median_s": med, "runs": ts, "ratio_vs_faster": med / base}
        print(f"{name:<22}{med:>10.2f}{len(ts):>6}{med / base:>21.2f}x")
    print("stats identical across engines (max |diff| < 1e-12)")

    from eval.voc import voc_evaluate
    from tests.test_eval_voc import brute_force_ap

    gts, vdets = voc_problem(a.voc_images)
    names = [f"c{k}" for k in range(20)]
    ours = [timed(voc_evaluate, gts, vdets, names, 0.5, "voc07", True) for _ in range(a.repeats)]
    t0 = time.perf_counter()
    brute = [brute_force_ap(gts, vdets, k, 0.5, "voc07", True) for k in range(20)]
    t_brute = time.perf_counter() - t0
    got = list(ours[-1][1]["per_class"].values())
    assert np.allclose(got, brute, atol=1e-12), "VOC AP differs from the devkit loop"
    med = statistics.median(t for t, _ in ours)
    res["voc"] = {
        "images": len(gts),
        "detections": len(vdets),
        "ours_median_s": med,
        "devkit_loop_s": t_brute,
        "speedup": t_brute / med,
    }
    print(
        f"VOC07 ({len(gts)} images, {len(vdets)} detections): ours {med:.2f} s, "
        f"devkit-style loop {t_brute:.2f} s ({t_brute / med:.1f}x), identical AP"
    )
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
