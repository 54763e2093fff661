"""Evaluation speed at COCO and VOC2007-test scale, against the reference tools in one run.

    .venv/bin/python -m bench.eval_speed [--images 5000] [--repeats 5] [--skip-pycocotools]
        [--memory-detections 5000000]

COCO: a synthetic problem shaped like val2017 (5000 images, ~37k GT boxes, 80 classes, 100
detections per image) is written to JSON. ``vision eval coco`` (the command, numpy engine,
validation included), faster-coco-eval and pycocotools each run as a whole process
(``bench.coco_child``: interpreter, imports, reading the files, evaluation), interleaved, and
their 12 stats must be identical (1e-12). One more run of each, timed stage by stage, shows
where the time goes. ``--memory-detections N`` tiles the problem to N detections and reports
our peak RSS. VOC: 4952 images, 20 classes; our vectorized devkit matcher against a
literal per-detection devkit loop (the test suite's reference). Prints medians and ratios,
writes ``bench/results/eval_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson


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


def child(engine: str, gt_path: Path, dt_path: Path, stages: bool = False) -> dict:
    """One whole-process evaluation: its wall time, stats, peak RSS (and stage times)."""
    cmd = [sys.executable, "-m", "bench.coco_child", engine, str(gt_path), str(dt_path)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd + (["--stages"] if stages else []), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{engine} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["wall_s"] = wall
    return r


def tile(gt: dict, dets: list, n_dets: int) -> tuple[dict, list]:
    """The problem repeated (new image and annotation ids) until it holds ``n_dets``."""
    reps = -(-n_dets // len(dets))
    step = max(im["id"] for im in gt["images"])
    images, anns, out = [], [], []
    for r in range(reps):
        images += [dict(im, id=im["id"] + r * step) for im in gt["images"]]
        anns += [dict(a, id=a["id"] + r * len(gt["annotations"]), image_id=a["image_id"] + r * step)
                 for a in gt["annotations"]]  # fmt: skip
        out += [dict(d, image_id=d["image_id"] + r * step) for d in dets]
    return {"images": images, "annotations": anns, "categories": gt["categories"]}, out[:n_dets]


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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-detections", type=int, default=0)
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
    engines = ["vision", "faster-coco-eval"]
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    if not a.skip_pycocotools:
        runs["pycocotools"] = [child("pycocotools", gt_path, dt_path)]
    for _ in range(a.repeats):  # round-robin so machine noise hits all alike
        for e in engines:
            runs[e].append(child(e, gt_path, dt_path))
    ref = runs.get("pycocotools", runs["faster-coco-eval"])[0]["stats"]
    for name, rs in runs.items():
        for r in rs:
            diff = float(np.max(np.abs(np.array(r["stats"]) - np.array(ref))))
            assert diff < 1e-12, f"{name} stats differ from the reference by {diff}"
    base = statistics.median(r["wall_s"] for r in runs["faster-coco-eval"])
    head = f"{'COCO bbox, whole process':<26}{'median s':>10}{'runs':>6}"
    print(f"{head}{'faster-coco-eval / it':>24}{'peak MB':>9}")
    for name, rs in runs.items():
        med = statistics.median(r["wall_s"] for r in rs)
        rss = max(r["peak_rss_mb"] for r in rs)
        res["coco"][name] = {"median_s": med, "runs_s": [r["wall_s"] for r in rs],
                             "speedup_vs_faster": base / med, "peak_rss_mb": rss}  # fmt: skip
        print(f"{name:<26}{med:>10.2f}{len(rs):>6}{base / med:>23.2f}x{rss:>9.0f}")
    print("stats identical across engines (max |diff| < 1e-12)")
    print("where the time goes (one run each, seconds):")
    res["coco"]["stages"] = {}
    for e in engines:
        st = child(e, gt_path, dt_path, stages=True)["stages"]
        res["coco"]["stages"][e] = st
        print(f"  {e:<18}" + ", ".join(f"{k} {v:.2f}" for k, v in st.items()))
    if a.memory_detections:
        big_gt, big_dt = tile(gt, dets, a.memory_detections)
        bg, bd = work / "bench_gt_big.json", work / "bench_dt_big.json"
        bg.write_bytes(orjson.dumps(big_gt))
        bd.write_bytes(orjson.dumps(big_dt))
        del big_gt, big_dt
        res["coco"]["memory"] = {"detections": a.memory_detections}
        for e in ["vision"]:  # faster-coco-eval needs ~1.3 GB per 500k (above): not run here
            r = child(e, bg, bd)
            res["coco"]["memory"][e] = {"peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall_s"]}
            print(f"{a.memory_detections:,} detections: {e} peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['wall_s']:.1f} s")  # fmt: skip
        bg.unlink()
        bd.unlink()

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
